-Queue ID-        --Size-- ---Arrival Time---- --Sender/Recipient------
4jZMSX2Lr2zJDBP*      4378 Mon Nov 24 21:52:40 a@bench.test
                                               x@discard.test

-- 4 Kbytes in 1 Request.
