Mail queue is empty
