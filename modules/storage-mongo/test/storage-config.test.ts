import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { databaseFromUri, mongoStorageConfigSchema, mongoStorageModule, resolveDatabaseName } from '../src/index.js';

const MINIMAL = { type: 'mongodb', uri: 'mongodb://h' } as const;

function errorText(input: unknown): string {
  const result = mongoStorageConfigSchema.safeParse(input);
  expect(result.success).toBe(false);
  return z.prettifyError(result.error!);
}

function issuePaths(input: unknown): string[] {
  const result = mongoStorageConfigSchema.safeParse(input);
  expect(result.success).toBe(false);
  return result.error!.issues.map((issue) => issue.path.join('.'));
}

describe('mongoStorageModule', () => {
  it('owns storage sections of type mongodb with its schema', () => {
    expect(mongoStorageModule.type).toBe('mongodb');
    expect(mongoStorageModule.configSchema).toBe(mongoStorageConfigSchema);
  });
});

describe('storage config schema (PROTOCOL §10)', () => {
  it('accepts a minimal config and fills in the pool size and timeout defaults', () => {
    expect(mongoStorageConfigSchema.parse({ type: 'mongodb', uri: 'mongodb://localhost:27017' })).toEqual({
      type: 'mongodb',
      uri: 'mongodb://localhost:27017',
      max_pool_size: 8,
      server_selection_timeout_seconds: 15,
      socket_timeout_seconds: 15,
      connect_timeout_seconds: 10,
      heartbeat_frequency_seconds: 10
    });
  });

  it('accepts every documented key', () => {
    const config = mongoStorageConfigSchema.parse({
      type: 'mongodb',
      uri: 'mongodb+srv://cluster0.example.net/app?retryWrites=true',
      database: 'sync',
      username: 'ps',
      password: 'secret',
      max_pool_size: 20
    });
    expect(config).toMatchObject({ database: 'sync', username: 'ps', password: 'secret', max_pool_size: 20 });
  });

  it('accepts a pool size given as a decimal string (from !env without ::number)', () => {
    expect(
      mongoStorageConfigSchema.parse({ type: 'mongodb', uri: 'mongodb://h', max_pool_size: '16' }).max_pool_size
    ).toBe(16);
  });

  it('names uri when it is missing', () => {
    expect(issuePaths({ type: 'mongodb' })).toEqual(['uri']);
    expect(errorText({ type: 'mongodb' })).toMatch(/uri/);
    expect(errorText({ type: 'mongodb' })).toMatch(/is required/);
  });

  it('names uri when it is not a MongoDB connection string', () => {
    expect(issuePaths({ type: 'mongodb', uri: 'postgresql://localhost/db' })).toEqual(['uri']);
    expect(issuePaths({ type: 'mongodb', uri: 'mongodb://' })).toEqual(['uri']);
    expect(issuePaths({ type: 'mongodb', uri: 42 })).toEqual(['uri']);
  });

  it('names type when it is not mongodb', () => {
    expect(issuePaths({ type: 'postgresql', uri: 'mongodb://h' })).toEqual(['type']);
  });

  it.each([0, -1, 1.5, 'abc', '', true, 1001])('names max_pool_size for %j', (value) => {
    expect(issuePaths({ type: 'mongodb', uri: 'mongodb://h', max_pool_size: value })).toEqual(['max_pool_size']);
    const text = errorText({ type: 'mongodb', uri: 'mongodb://h', max_pool_size: value });
    expect(text).toMatch(/max_pool_size/);
    expect(text).toMatch(/must be (a positive integer|at most 1000)/);
  });

  it('accepts timeouts in seconds, also as decimal strings and fractions', () => {
    const config = mongoStorageConfigSchema.parse({
      ...MINIMAL,
      server_selection_timeout_seconds: '2.5',
      socket_timeout_seconds: 30,
      connect_timeout_seconds: 0.5,
      heartbeat_frequency_seconds: '1'
    });
    expect(config).toMatchObject({
      server_selection_timeout_seconds: 2.5,
      socket_timeout_seconds: 30,
      connect_timeout_seconds: 0.5,
      heartbeat_frequency_seconds: 1
    });
  });

  it.each([
    ['server_selection_timeout_seconds', 0, /at least 0.1 seconds/],
    ['server_selection_timeout_seconds', 3601, /at most 3600 seconds/],
    ['server_selection_timeout_seconds', 'soon', /must be a number of seconds/],
    ['server_selection_timeout_seconds', '', /must be a number of seconds/],
    // Shorter than the checkpoint listener's 10 s await would end every idle tailable read in a timeout.
    ['socket_timeout_seconds', 10, /at least 11 seconds/],
    ['socket_timeout_seconds', -1, /at least 11 seconds/],
    ['connect_timeout_seconds', 0, /at least 0.1 seconds/],
    ['connect_timeout_seconds', true, /must be a number of seconds/],
    ['heartbeat_frequency_seconds', 0.2, /at least 0.5 seconds/],
    ['heartbeat_frequency_seconds', '1e3', /must be a number of seconds/]
  ] as const)('names %s for %j', (key, value, message) => {
    expect(issuePaths({ ...MINIMAL, [key]: value })).toEqual([key]);
    expect(errorText({ ...MINIMAL, [key]: value })).toMatch(message);
  });

  it('names database and username when empty, and password when not a string', () => {
    expect(issuePaths({ type: 'mongodb', uri: 'mongodb://h', database: '' })).toEqual(['database']);
    expect(issuePaths({ type: 'mongodb', uri: 'mongodb://h', username: '' })).toEqual(['username']);
    expect(issuePaths({ type: 'mongodb', uri: 'mongodb://h', password: 1234 })).toEqual(['password']);
  });
});

describe('database name', () => {
  it('reads the database from the URI path', () => {
    expect(databaseFromUri('mongodb://u:p@h1:27017,h2:27018/app_db?replicaSet=rs0')).toBe('app_db');
    expect(databaseFromUri('mongodb+srv://cluster0.example.net/sync%2Ddb')).toBe('sync-db');
    expect(databaseFromUri('mongodb://h1/')).toBeUndefined();
    expect(databaseFromUri('mongodb://h1/?replicaSet=rs0')).toBeUndefined();
    expect(databaseFromUri('mongodb://h1?replicaSet=rs0')).toBeUndefined();
  });

  it('prefers database from config, then the URI, then powersync', () => {
    expect(resolveDatabaseName({ uri: 'mongodb://h/from_uri', database: 'explicit' })).toBe('explicit');
    expect(resolveDatabaseName({ uri: 'mongodb://h/from_uri' })).toBe('from_uri');
    expect(resolveDatabaseName({ uri: 'mongodb://h:27017' })).toBe('powersync');
  });
});
