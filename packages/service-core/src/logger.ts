import { pino, type Logger } from 'pino';

export type { Logger };

export type LogLevel = 'silly' | 'trace' | 'debug' | 'verbose' | 'info' | 'warn' | 'error' | 'silent';

/** PROTOCOL §10 levels mapped onto pino's. */
const PINO_LEVELS: Record<LogLevel, string> = {
  silly: 'trace',
  trace: 'trace',
  verbose: 'debug',
  debug: 'debug',
  info: 'info',
  warn: 'warn',
  error: 'error',
  silent: 'silent'
};

/**
 * Structured JSON logs. Authorization headers, tokens and passwords are redacted wherever they appear
 * in a logged object, so a careless `logger.info({ req })` can never leak a secret.
 */
export function createLogger(options: { level?: LogLevel; destination?: pino.DestinationStream } = {}): Logger {
  return pino(
    {
      level: PINO_LEVELS[options.level ?? 'info'],
      base: { service: 'syncpoint' },
      redact: {
        paths: [
          'authorization',
          '*.authorization',
          '*.headers.authorization',
          'token',
          '*.token',
          'password',
          '*.password',
          'uri',
          '*.uri'
        ],
        censor: '[redacted]'
      }
    },
    options.destination
  );
}

/** A logger that drops everything (tests, library defaults). */
export const silentLogger: Logger = pino({ level: 'silent' });
