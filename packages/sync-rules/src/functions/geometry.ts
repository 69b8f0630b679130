/**
 * PostGIS functions over geometry values as they arrive from replication: PostGIS sends `geometry`
 * and `geography` columns as hex text of (E)WKB, which may carry an SRID. A blob holding the WKB bytes
 * is accepted too. The values are read with `@syncpoint/wkx`, the WKB reader the reference uses, so
 * WKT and GeoJSON come out exactly as there (Point, LineString, Polygon, Multi*, GeometryCollection,
 * with Z/M).
 */
import { createRequire } from 'node:module';
import { stringifyJson, type JsonValue } from '../json.js';
import { EvaluationFailure, type SqliteValue } from '../sqlite-value.js';
import type { FunctionDefinition } from './types.js';

/** The part of `@syncpoint/wkx` used here (its bundled typings declare the module under the name `wkx`). */
interface Geometry {
  toWkt(): string;
  toGeoJSON(): unknown;
}
interface WkxModule {
  Geometry: { parse(value: Buffer): Geometry };
  Point: new (...args: never[]) => Geometry & { x?: number; y?: number };
}

const wkx = createRequire(import.meta.url)('@syncpoint/wkx') as WkxModule;

const HEX = /^(?:[0-9a-fA-F]{2})*$/;

/** Reads a geometry; NULL for NULL and for values that are not text or blob. */
function parseGeometry(value: SqliteValue): Geometry | null {
  let bytes: Buffer;
  if (value instanceof Uint8Array) bytes = Buffer.from(value);
  else if (typeof value === 'string') {
    if (!HEX.test(value)) throw new EvaluationFailure('the value is not a geometry (expected hex-encoded WKB)');
    bytes = Buffer.from(value, 'hex');
  } else return null;
  try {
    return wkx.Geometry.parse(bytes);
  } catch (error) {
    throw new EvaluationFailure(
      `the value is not a valid WKB geometry (${error instanceof Error ? error.message : String(error)})`
    );
  }
}

/** GeoJSON object → JSON model; coordinates stay REALs, so they print as `1.0` like the reference's. */
function toJson(value: unknown): JsonValue {
  if (value === null || value === undefined) return null;
  if (typeof value === 'number' || typeof value === 'string' || typeof value === 'boolean') return value;
  if (Array.isArray(value)) return value.map(toJson);
  const result: { [key: string]: JsonValue } = {};
  for (const [key, item] of Object.entries(value)) {
    if (item !== undefined) result[key] = toJson(item);
  }
  return result;
}

function pointCoordinate(value: SqliteValue, axis: 'x' | 'y'): SqliteValue {
  const geometry = parseGeometry(value);
  if (!(geometry instanceof wkx.Point)) return null;
  const coordinate = (geometry as { x?: number; y?: number })[axis];
  return coordinate === undefined ? null : coordinate;
}

export const GEOMETRY_FUNCTIONS: Record<string, FunctionDefinition> = {
  st_asgeojson: {
    minArgs: 1,
    maxArgs: 1,
    call: ([value]) => {
      const geometry = parseGeometry(value!);
      return geometry && stringifyJson(toJson(geometry.toGeoJSON()));
    }
  },
  st_astext: {
    minArgs: 1,
    maxArgs: 1,
    call: ([value]) => parseGeometry(value!)?.toWkt() ?? null
  },
  st_x: { minArgs: 1, maxArgs: 1, call: ([value]) => pointCoordinate(value!, 'x') },
  st_y: { minArgs: 1, maxArgs: 1, call: ([value]) => pointCoordinate(value!, 'y') }
};
