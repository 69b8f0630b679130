-- The demo schema of the embedded default (service/src/embedded-default.ts keeps its own copy for runtime; a test
-- checks that the two agree).
CREATE TABLE IF NOT EXISTS todos (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  description text NOT NULL,
  completed boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now()
);
