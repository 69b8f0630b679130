-- TEST ONLY. The items table of the fault, crash and benchmark tests: int8 ids, an owner (the by_owner bucket
-- parameter), an int8 value, and the batch (transaction) that last wrote the row.
CREATE TABLE IF NOT EXISTS items (id int8 PRIMARY KEY, owner text NOT NULL, val int8 NOT NULL, batch text NOT NULL);
