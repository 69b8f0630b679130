-- TEST ONLY. The todos table of the service tests: text ids (tests pick readable ones such as 't1'), a description.
CREATE TABLE IF NOT EXISTS todos (id text PRIMARY KEY, description text);
