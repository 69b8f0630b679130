/**
 * What replication needs to know about a Postgres type to convert its text output (see value-conversion.ts):
 * a conversion category and, for arrays, the element type and delimiter. Builtin types are hard-coded;
 * others (enums, domains, arrays of those, extension types) are read from `pg_type` with {@link TypeCatalog.load}.
 */
import type pg from 'pg';

type TypeCategory =
  | 'text' // passed through as text (also enums, time, interval, xml, bit, ... and unknown types)
  | 'integer' // int2/int4/int8/oid → bigint
  | 'float' // float4/float8 → number
  | 'bool' // 't'/'f' → 1n/0n
  | 'numeric' // → exact text
  | 'json' // json/jsonb → JSON text as printed
  | 'date'
  | 'timestamp'
  | 'timestamptz'
  | 'bytea' // → Uint8Array
  | 'pg_lsn' // → normalised LSN text
  | 'array';

export interface TypeInfo {
  oid: number;
  name: string;
  /** For domains: the category of the (recursively resolved) base type. */
  category: TypeCategory;
  /** Arrays only: the element type OID. */
  elementOid?: number;
  /** Arrays only: the element delimiter in the text form (',' for all builtin types except box, which uses ';'). */
  delimiter?: string;
}

interface PgTypeRow {
  oid: number;
  typname: string;
  typtype: string;
  typcategory: string;
  typelem: number;
  typbasetype: number;
  typdelim: string;
}

const BOX_OID = 603;

/** OID → [name, category] of builtin scalar types. */
const BUILTIN_SCALARS: Record<number, [string, TypeCategory]> = {
  16: ['bool', 'bool'],
  17: ['bytea', 'bytea'],
  18: ['char', 'text'],
  19: ['name', 'text'],
  20: ['int8', 'integer'],
  21: ['int2', 'integer'],
  23: ['int4', 'integer'],
  25: ['text', 'text'],
  26: ['oid', 'integer'],
  114: ['json', 'json'],
  142: ['xml', 'text'],
  603: ['box', 'text'],
  650: ['cidr', 'text'],
  700: ['float4', 'float'],
  701: ['float8', 'float'],
  705: ['unknown', 'text'],
  790: ['money', 'text'],
  829: ['macaddr', 'text'],
  869: ['inet', 'text'],
  1042: ['bpchar', 'text'],
  1043: ['varchar', 'text'],
  1082: ['date', 'date'],
  1083: ['time', 'text'],
  1114: ['timestamp', 'timestamp'],
  1184: ['timestamptz', 'timestamptz'],
  1186: ['interval', 'text'],
  1266: ['timetz', 'text'],
  1560: ['bit', 'text'],
  1562: ['varbit', 'text'],
  1700: ['numeric', 'numeric'],
  2950: ['uuid', 'text'],
  3220: ['pg_lsn', 'pg_lsn'],
  3802: ['jsonb', 'json']
};

/** Array OID → element OID of builtin array types. */
const BUILTIN_ARRAYS: Record<number, number> = {
  1000: 16, // bool[]
  1001: 17, // bytea[]
  1002: 18, // char[]
  1003: 19, // name[]
  1016: 20, // int8[]
  1005: 21, // int2[]
  1007: 23, // int4[]
  1009: 25, // text[]
  1028: 26, // oid[]
  199: 114, // json[]
  143: 142, // xml[]
  1020: 603, // box[]
  651: 650, // cidr[]
  1021: 700, // float4[]
  1022: 701, // float8[]
  791: 790, // money[]
  1040: 829, // macaddr[]
  1041: 869, // inet[]
  1014: 1042, // bpchar[]
  1015: 1043, // varchar[]
  1182: 1082, // date[]
  1183: 1083, // time[]
  1115: 1114, // timestamp[]
  1185: 1184, // timestamptz[]
  1187: 1186, // interval[]
  1270: 1266, // timetz[]
  1561: 1560, // bit[]
  1563: 1562, // varbit[]
  1231: 1700, // numeric[]
  2951: 2950, // uuid[]
  3221: 3220, // pg_lsn[]
  3807: 3802 // jsonb[]
};

function builtinTypes(): Map<number, TypeInfo> {
  const types = new Map<number, TypeInfo>();
  for (const [oid, [name, category]] of Object.entries(BUILTIN_SCALARS)) {
    types.set(Number(oid), { oid: Number(oid), name, category });
  }
  for (const [oid, elementOid] of Object.entries(BUILTIN_ARRAYS)) {
    const element = BUILTIN_SCALARS[elementOid]!;
    types.set(Number(oid), {
      oid: Number(oid),
      name: `_${element[0]}`,
      category: 'array',
      elementOid,
      delimiter: elementOid === BOX_OID ? ';' : ','
    });
  }
  return types;
}

const TEXT_FALLBACK: Omit<TypeInfo, 'oid'> = { name: 'unknown', category: 'text' };

export class TypeCatalog {
  private readonly types = builtinTypes();

  /** The type's conversion info; types neither builtin nor loaded are treated as text. */
  get(oid: number): TypeInfo {
    return this.types.get(oid) ?? { oid, ...TEXT_FALLBACK };
  }

  has(oid: number): boolean {
    return this.types.has(oid);
  }

  /** Of `oids`, those neither builtin nor loaded yet. */
  unknown(oids: Iterable<number>): number[] {
    return [...new Set(oids)].filter((oid) => !this.types.has(oid));
  }

  /**
   * Reads the unknown types among `oids` from `pg_type` (and, transitively, their array element and domain
   * base types) and caches them. Enums and other non-builtin types become text; arrays (typcategory 'A' with
   * a typelem) become arrays of their element; domains take their base type's conversion.
   * OIDs missing from `pg_type` (e.g. dropped types) are cached as text.
   */
  async load(client: pg.ClientBase | pg.Pool, oids: number[]): Promise<void> {
    const rows = new Map<number, PgTypeRow>();
    let pending = this.unknown(oids);
    while (pending.length > 0) {
      const result = await client.query<PgTypeRow>(
        `SELECT oid, typname, typtype, typcategory, typelem, typbasetype, typdelim
           FROM pg_catalog.pg_type WHERE oid = ANY($1::oid[])`,
        [pending]
      );
      for (const row of result.rows) {
        rows.set(Number(row.oid), {
          ...row,
          oid: Number(row.oid),
          typelem: Number(row.typelem),
          typbasetype: Number(row.typbasetype)
        });
      }
      const next = new Set<number>();
      for (const oid of pending) {
        const row = rows.get(oid);
        if (!row) continue;
        for (const dependency of [row.typelem, row.typbasetype]) {
          if (dependency !== 0 && !this.types.has(dependency) && !rows.has(dependency)) next.add(dependency);
        }
      }
      pending = [...next];
    }
    for (const oid of this.unknown(oids)) this.resolve(oid, rows, new Set());
  }

  private resolve(oid: number, rows: Map<number, PgTypeRow>, visiting: Set<number>): TypeInfo {
    const known = this.types.get(oid);
    if (known) return known;
    const row = rows.get(oid);
    if (!row || visiting.has(oid)) {
      const info = { oid, ...TEXT_FALLBACK, name: row?.typname ?? TEXT_FALLBACK.name };
      this.types.set(oid, info);
      return info;
    }
    visiting.add(oid);
    let info: TypeInfo;
    const { typelem, typbasetype } = row;
    if (row.typtype === 'd' && typbasetype !== 0) {
      const base = this.resolve(typbasetype, rows, visiting);
      info = { ...base, oid, name: row.typname };
    } else if (row.typcategory === 'A' && typelem !== 0) {
      this.resolve(typelem, rows, visiting);
      // array_out separates elements with the element type's delimiter.
      const delimiter = rows.get(typelem)?.typdelim || (typelem === BOX_OID ? ';' : ',');
      info = { oid, name: row.typname, category: 'array', elementOid: typelem, delimiter };
    } else {
      // Enums ('e'), ranges, composites, extension base types (citext, ...): text.
      info = { oid, name: row.typname, category: 'text' };
    }
    this.types.set(oid, info);
    return info;
  }
}
