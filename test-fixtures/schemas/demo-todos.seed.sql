-- TEST ONLY. Three todos with fixed ids, one done.
INSERT INTO todos (id, description, completed, created_at) VALUES
  ('00000000-0000-4000-8000-000000000001', 'Buy milk', false, '2024-01-01 09:00:00+00'),
  ('00000000-0000-4000-8000-000000000002', 'Write the report', true, '2024-01-01 10:00:00+00'),
  ('00000000-0000-4000-8000-000000000003', 'Call the plumber', false, '2024-01-02 08:30:00+00');
