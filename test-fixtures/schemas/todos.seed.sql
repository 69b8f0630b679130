-- TEST ONLY. Two todos.
INSERT INTO todos (id, description) VALUES ('t1', 'first todo'), ('t2', 'second todo');
