import { describe, expect, test } from 'vitest';
import { bytes, errorOf, valueOf } from './support/evaluate.js';

/** Little-endian WKB of POINT(1 2), written out by hand. */
const POINT_WKB = '0101000000000000000000F03F0000000000000040';
/** The same point as PostGIS EWKB with SRID 4326, as it arrives from replication. */
const POINT_EWKB = '0101000020E6100000000000000000F03F0000000000000040';
/** Big-endian LINESTRING(0 0, 1.5 -2). */
const LINESTRING_WKB = '00000000020000000200000000000000000000000000000000' + '3FF8000000000000C000000000000000';
/** POLYGON((0 0,1 0,1 1,0 0)) little-endian. */
const POLYGON_WKB =
  '010300000001000000040000000000000000000000000000000000000000000000' +
  '0000F03F0000000000000000000000000000F03F000000000000F03F' +
  '00000000000000000000000000000000';
/** GEOMETRYCOLLECTION(POINT(1 2)) little-endian. */
const COLLECTION_WKB = '010700000001000000' + POINT_WKB;
/** MULTIPOINT((1 2),(1 2)). */
const MULTIPOINT_WKB = '010400000002000000' + POINT_WKB + POINT_WKB;

describe('PostGIS functions over (E)WKB hex', () => {
  test.each([
    ['ST_AsText(g)', POINT_WKB, 'POINT(1 2)'],
    ['ST_AsText(g)', POINT_EWKB, 'POINT(1 2)'],
    ['ST_AsText(g)', LINESTRING_WKB, 'LINESTRING(0 0,1.5 -2)'],
    ['ST_AsText(g)', POLYGON_WKB, 'POLYGON((0 0,1 0,1 1,0 0))'],
    ['ST_AsText(g)', COLLECTION_WKB, 'GEOMETRYCOLLECTION(POINT(1 2))'],
    ['ST_AsText(g)', MULTIPOINT_WKB, 'MULTIPOINT(1 2,1 2)'],
    ['ST_AsGeoJSON(g)', POINT_EWKB, '{"type":"Point","coordinates":[1.0,2.0]}'],
    ['ST_AsGeoJSON(g)', LINESTRING_WKB, '{"type":"LineString","coordinates":[[0.0,0.0],[1.5,-2.0]]}'],
    [
      'ST_AsGeoJSON(g)',
      COLLECTION_WKB,
      '{"type":"GeometryCollection","geometries":[{"type":"Point","coordinates":[1.0,2.0]}]}'
    ],
    ['ST_X(g)', POINT_EWKB, 1],
    ['ST_Y(g)', POINT_EWKB, 2],
    ['ST_X(g)', LINESTRING_WKB, null],
    ['st_astext(g)', POINT_WKB.toLowerCase(), 'POINT(1 2)']
  ])('%s of %s → %o', (expression, geometry, expected) => {
    expect(valueOf(expression, { g: geometry })).toEqual(expected);
  });

  test('a blob with the WKB bytes works too; NULL and numbers give NULL', () => {
    expect(valueOf('ST_AsText(g)', { g: new Uint8Array(Buffer.from(POINT_WKB, 'hex')) })).toBe('POINT(1 2)');
    expect(valueOf('ST_X(g)', { g: null })).toBeNull();
    expect(valueOf('ST_AsText(5)')).toBeNull();
  });

  test('text that is not WKB fails the row with a clear message', () => {
    expect(errorOf('ST_AsText(g)', { g: 'POINT(1 2)' })).toMatch(/not a geometry \(expected hex-encoded WKB\)/);
    expect(errorOf('ST_AsText(g)', { g: '0101' })).toMatch(/not a valid WKB geometry/);
    expect(errorOf('ST_X(g)', { g: bytes(9, 9) })).toMatch(/not a valid WKB geometry/);
  });
});
