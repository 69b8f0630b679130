-- TEST ONLY. 100 items over 10 owners (user-0 … user-9), written by batch 'seed'.
INSERT INTO items (id, owner, val, batch)
SELECT i, 'user-' || (i % 10), i * 7, 'seed' FROM generate_series(1, 100) AS i;
