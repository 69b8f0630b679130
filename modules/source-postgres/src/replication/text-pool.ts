import pg from 'pg';
import { SOURCE_QUERY_TIMEOUT_MS } from '../source-connection.js';

/** Every value as the text Postgres prints: conversion to SQLite values is ours (value-conversion.ts). */
const rawTextTypes = {
  getTypeParser: () => (value: string) => value
};

/**
 * A pool for reading source rows, with the same session settings as the replication connection so snapshot and
 * streaming produce identical text (UTC timestamps, ISO dates, round-trip floats).
 */
export function createTextPool(config: pg.ClientConfig, max = 2): pg.Pool {
  const pool = new pg.Pool({
    ...config,
    max,
    query_timeout: SOURCE_QUERY_TIMEOUT_MS,
    types: rawTextTypes,
    options: '-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=3'
  });
  pool.on('error', () => {}); // idle clients dropped by the server; the next query reconnects
  return pool;
}
