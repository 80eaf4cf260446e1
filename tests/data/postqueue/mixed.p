-Queue ID-        --Size-- ---Arrival Time---- --Sender/Recipient------
4jZMSX0fbHzJDBF        512 Mon Nov 24 21:52:35 alice
                                               bob

4jZMSX2Lr2zJDBP*      4378 Mon Nov 24 21:52:40 a@bench.test
                                               x@discard.test

4jZMSX3BCDzJDBQ       1023 Mon Nov 24 21:52:41 MAILER-DAEMON
                                               postmaster@example.org

4jZMSX2DXCzJDBd#     20480 Fri Nov 21 21:52:40 a@bench.test
                 (connect to mx.example.com[192.0.2.7]:25: Connection refused)
                                               user@example.com
                                               other@example.com
(host mx.example.net[198.51.100.25] said: 451 4.7.1 Greylisted, please try again in 300 seconds (in reply to RCPT TO command))
                                               grey@example.net
                                                          (reason unavailable)
                                               "john doe"@example.com
                                               very.long.local.part.of.an.address.that.goes.on@a-very-long-subdomain.of.an.example.domain.example.com

4jZMSX4GHJzJDBR!#       99 Mon Nov 24 21:52:42 café@bücher.example
                                                         (tab?here and ? byte)
                                               "bell?ringer"@example.com

-- 25 Kbytes in 5 Requests.
