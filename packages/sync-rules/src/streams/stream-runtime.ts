/**
 * Compiled Sync Streams at run time: rows into buckets and parameter-index entries during replication
 * (STREAMS.md §4.3, §4.4), and a subscription's buckets at a checkpoint (§4.5), stage by stage.
 */
import {
  bucketParameterOrUndefined,
  sameBucketParameter,
  serializeBucketParameters,
  type BucketParameterValue
} from '../bucket-id.js';
import type { EvaluatedBucketRow } from '../data-query.js';
import {
  compileExpression,
  jsonEachRows,
  jsonOf,
  type CompiledExpression,
  type EvaluationContext,
  type StreamConnectionValues
} from '../expression.js';
import { fromJsValue, stringifyRow, type JsonValue } from '../json.js';
import { tableMatches } from '../source-table.js';
import type { Expression } from '../sql/ast.js';
import {
  castToText,
  EvaluationFailure,
  isTruthy,
  toSqliteValue,
  type InputRow,
  type SqliteRow,
  type SqliteValue
} from '../sqlite-value.js';
import {
  type CompiledBucketSource,
  type CompiledLookup,
  type CompiledRowEvaluator,
  type CompiledSource,
  type ValueReference
} from './compile-stream.js';

const SCOPE = {
  table: { name: '$row' },
  request: false,
  bucketReferenceError: 'bucket.* does not exist in streams',
  streamConnection: true
};

/** Most bindings (combinations of index rows and connection `json_each` rows) one bucket source may build. */
const MAX_BINDINGS = 10_000;

interface Compiled {
  evaluate: CompiledExpression['evaluate'];
}

function compile(expression: Expression): Compiled {
  return compileExpression(expression, SCOPE);
}

interface RuntimeEach {
  id: string;
  argument: Compiled;
}

interface RuntimeEvaluator {
  source: CompiledSource;
  attached: RuntimeEach[];
  filters: Compiled[];
  partitionKeys: Compiled[];
  columns: Array<{ kind: 'star'; source: string } | { kind: 'expression'; name: string; value: Compiled }>;
}

interface RuntimeLookup {
  indexId: number;
  stage: number;
  source: CompiledSource;
  attached: RuntimeEach[];
  filters: Compiled[];
  keys: Compiled[];
  keyInputs: RuntimeValue[];
  outputs: Compiled[];
}

type RuntimeValue = { kind: 'connection'; value: Compiled } | { kind: 'lookup'; lookup: number; output: number };

export interface RuntimeBucketSource {
  index: number;
  edition: number;
  requestFilters: Compiled[];
  connectionEach: RuntimeEach[];
  lookups: RuntimeLookup[];
  parameters: RuntimeValue[][];
  evaluators: RuntimeEvaluator[];
  maxStage: number;
}

const each = (source: CompiledSource): RuntimeEach => ({ id: source.id, argument: compile(source.argument!) });
const value = (reference: ValueReference): RuntimeValue =>
  reference.kind === 'connection' ? { kind: 'connection', value: compile(reference.expression) } : reference;

function runtimeEvaluator(evaluator: CompiledRowEvaluator): RuntimeEvaluator {
  return {
    source: evaluator.source,
    attached: evaluator.attached.map(each),
    filters: evaluator.filters.map(compile),
    partitionKeys: evaluator.partitionKeys.map(compile),
    columns: evaluator.columns.map((column) =>
      column.kind === 'star' ? column : { kind: 'expression', name: column.name, value: compile(column.expression) }
    )
  };
}

function runtimeLookup(lookup: CompiledLookup): RuntimeLookup {
  return {
    indexId: lookup.indexId,
    stage: lookup.stage,
    source: lookup.source,
    attached: lookup.attached.map(each),
    filters: lookup.filters.map(compile),
    keys: lookup.keyExpressions.map(compile),
    keyInputs: lookup.keyInputs.map(value),
    outputs: lookup.outputs.map(compile)
  };
}

export function runtimeSource(source: CompiledBucketSource, edition: number): RuntimeBucketSource {
  return {
    index: source.index,
    edition,
    requestFilters: source.requestFilters.map(compile),
    connectionEach: source.connectionEach.map(each),
    lookups: source.lookups.map(runtimeLookup),
    parameters: source.parameters.map((values) => values.map(value)),
    evaluators: source.evaluators.map(runtimeEvaluator),
    maxStage: Math.max(0, ...source.lookups.map((lookup) => lookup.stage))
  };
}

/** A source row as the composite row compiled expressions read: `<source id>.<column>` and row metadata. */
function compositeRow(source: CompiledSource, schema: string, table: string, row: InputRow): Record<string, unknown> {
  const composite: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const [key, item] of Object.entries(row)) composite[`${source.id}.${key}`] = item;
  composite[`${source.id}.#schema`] = schema;
  composite[`${source.id}.#table_name`] = table;
  const pattern = source.table!;
  composite[`${source.id}.#table_suffix`] = pattern.wildcard ? table.slice(pattern.name.length - 1) : '';
  return composite;
}

/**
 * Rows of `json_each(value)` (§3.5): NULL gives none; JSON text gives one per element (or one for a scalar);
 * a value that is not text, or text that is not JSON, is an error.
 */
function jsonEach(value: SqliteValue, edition: number): Array<Record<string, SqliteValue>> {
  if (value === null) return [];
  if (edition < 3) {
    // Edition 2 (§6): `IN` over a non-text value or a JSON value that is not an array matches nothing.
    if (typeof value !== 'string') return [];
    const json = jsonOf(value);
    return Array.isArray(json) ? jsonEachRows(json) : [];
  }
  if (typeof value !== 'string') throw new EvaluationFailure('Expected JSON string');
  return jsonEachRows(jsonOf(value));
}

/** Every combination of the attached `json_each` rows, each as a composite row (none when one has no rows). */
function expand(
  base: Record<string, unknown>,
  attached: readonly RuntimeEach[],
  edition: number
): Array<Record<string, unknown>> {
  let rows = [base];
  for (const source of attached) {
    const next: Array<Record<string, unknown>> = [];
    for (const row of rows) {
      for (const item of jsonEach(source.argument.evaluate({ row }), edition)) {
        next.push({ ...row, [`${source.id}.value`]: item['value'] ?? null, [`${source.id}.key`]: item['key'] ?? null });
      }
      if (next.length > MAX_BINDINGS)
        throw new EvaluationFailure(`json_each() expands to more than ${MAX_BINDINGS} rows`);
    }
    rows = next;
  }
  return rows;
}

function truthy(filters: readonly Compiled[], context: EvaluationContext): boolean {
  return filters.every((filter) => isTruthy(filter.evaluate(context)));
}

/** Bucket id of a stream bucket (§4.2): `[<deployId>#]<stream>|<n><params>`. */
export function streamBucketId(
  prefix: string,
  stream: string,
  index: number,
  values: readonly BucketParameterValue[]
): string {
  return `${prefix}${stream}|${index}${serializeBucketParameters(values)}`;
}

/** Replication side (§4.3): the bucket rows of one source row for one bucket source. */
export function evaluateStreamRow(
  stream: { name: string; edition: number; bucketPrefix: string },
  source: RuntimeBucketSource,
  input: { schema: string; table: string; row: InputRow }
): EvaluatedBucketRow[] {
  const results: EvaluatedBucketRow[] = [];
  for (const evaluator of source.evaluators) {
    if (!tableMatches(evaluator.source.table!, input.schema, input.table)) continue;
    const base = compositeRow(evaluator.source, input.schema, input.table, input.row);
    for (const row of expand(base, evaluator.attached, source.edition)) {
      const context: EvaluationContext = { row: row };
      if (!truthy(evaluator.filters, context)) continue;
      const values: BucketParameterValue[] = [];
      for (const key of evaluator.partitionKeys) {
        const parameter = bucketParameterOrUndefined(key.evaluate(context), 'A partition key');
        if (parameter === undefined) break;
        values.push(parameter);
      }
      if (values.length !== evaluator.partitionKeys.length) continue;
      const output = outputRow(evaluator, input.row, context, stream.edition);
      results.push({
        bucket: streamBucketId(stream.bucketPrefix, stream.name, source.index, values),
        table:
          evaluator.source.alias ?? (evaluator.source.table!.wildcard ? input.table : evaluator.source.table!.name),
        id: castToText(output['id'] ?? null) ?? '',
        data: stringifyRow(output)
      });
    }
  }
  return results;
}

function outputRow(evaluator: RuntimeEvaluator, row: InputRow, context: EvaluationContext, edition: number): SqliteRow {
  const output: SqliteRow = {};
  const set = (name: string, item: SqliteValue) =>
    Object.defineProperty(output, name, { value: item, enumerable: true, writable: true, configurable: true });
  for (const column of evaluator.columns) {
    if (column.kind === 'star') {
      for (const name of Object.keys(row)) {
        // Edition 2 skips columns whose name starts with "_" (§2.5).
        if (edition < 3 && name.startsWith('_')) continue;
        set(name, toSqliteValue(row[name], name));
      }
    } else set(column.name, column.value.evaluate(context));
  }
  return output;
}

/** Replication side (§4.4): the index entries of one source row for one lookup: serialized key → outputs. */
export function evaluateLookupRow(
  lookup: RuntimeLookup,
  input: { schema: string; table: string; row: InputRow },
  edition: number
): Array<{ key: BucketParameterValue[]; output: SqliteRow }> {
  if (!tableMatches(lookup.source.table!, input.schema, input.table)) return [];
  const base = compositeRow(lookup.source, input.schema, input.table, input.row);
  const entries: Array<{ key: BucketParameterValue[]; output: SqliteRow }> = [];
  rows: for (const row of expand(base, lookup.attached, edition)) {
    const context: EvaluationContext = { row: row };
    if (!truthy(lookup.filters, context)) continue;
    const key: BucketParameterValue[] = [];
    for (const expression of lookup.keys) {
      const item = bucketParameterOrUndefined(expression.evaluate(context), 'An index key');
      if (item === undefined) continue rows;
      key.push(item);
    }
    const output: SqliteRow = {};
    for (const [index, expression] of lookup.outputs.entries()) {
      const item = bucketParameterOrUndefined(expression.evaluate(context), 'An index output');
      if (item === undefined) continue rows;
      output[`o${index}`] = item;
    }
    entries.push({ key, output });
  }
  return entries;
}

/** Connection data of one subscription (§3.3). */
export function streamConnectionValues(
  request: {
    userId: string;
    tokenParameters?: Readonly<Record<string, unknown>>;
    clientParameters?: Readonly<Record<string, unknown>>;
  },
  subscription: Readonly<Record<string, unknown>> | null
): StreamConnectionValues {
  const object = (input: unknown): Record<string, JsonValue> => {
    const json = fromJsValue(input ?? {});
    return json !== null && typeof json === 'object' && !Array.isArray(json) ? json : {};
  };
  return {
    userId: request.userId,
    auth: object(request.tokenParameters),
    connection: object(request.clientParameters),
    subscription: subscription === null ? null : object(subscription)
  };
}

/** One way of satisfying a bucket source's lookups so far: connection `json_each` rows and index rows. */
interface Binding {
  row: Record<string, unknown>;
  lookups: Array<Readonly<Record<string, SqliteValue>> | undefined>;
}

/** Resolution state of one (subscription, bucket source) pair (§4.5). */
export class SourceResolution {
  private bindings: Binding[] = [];
  private pending = new Map<Binding, Array<BucketParameterValue[] | undefined>>();

  constructor(
    readonly source: RuntimeBucketSource,
    private readonly connection: StreamConnectionValues
  ) {}

  private context(binding: Binding): EvaluationContext {
    return { row: binding.row, stream: this.connection };
  }

  /** Steps 1–2: request filters and connection values. Throws {@link EvaluationFailure} (a per-subscription error). */
  start(): void {
    let rows: Array<Record<string, unknown>> = [{}];
    for (const source of this.source.connectionEach) {
      const next: Array<Record<string, unknown>> = [];
      for (const row of rows) {
        const items = jsonEach(source.argument.evaluate({ row, stream: this.connection }), this.source.edition);
        for (const item of items)
          next.push({
            ...row,
            [`${source.id}.value`]: item['value'] ?? null,
            [`${source.id}.key`]: item['key'] ?? null
          });
      }
      if (next.length > MAX_BINDINGS) throw new EvaluationFailure(`More than ${MAX_BINDINGS} parameter combinations`);
      rows = next;
    }
    this.bindings = rows
      .map((row) => ({ row, lookups: this.source.lookups.map(() => undefined) }))
      .filter((binding) => truthy(this.source.requestFilters, this.context(binding)));
    // Values the lookups and partition keys read are evaluated now, so that their errors are per subscription.
    for (const binding of this.bindings)
      for (const values of this.source.parameters)
        for (const item of values) if (item.kind === 'connection') item.value.evaluate(this.context(binding));
  }

  private valueIn(binding: Binding, reference: RuntimeValue): SqliteValue {
    if (reference.kind === 'connection') return reference.value.evaluate(this.context(binding));
    return binding.lookups[reference.lookup]?.[`o${reference.output}`] ?? null;
  }

  /** Step 3 for one stage: the lookups to read (a stage's keys only use connection data and earlier stages). */
  lookupsOf(stage: number): Array<{ indexId: number; key: BucketParameterValue[] }> {
    this.pending = new Map();
    const requested: Array<{ indexId: number; key: BucketParameterValue[] }> = [];
    const stageLookups = this.stageLookups(stage);
    for (const binding of this.bindings) {
      const keys: Array<BucketParameterValue[] | undefined> = [];
      for (const lookup of stageLookups) {
        const definition = this.source.lookups[lookup]!;
        const key: BucketParameterValue[] = [];
        for (const input of definition.keyInputs) {
          const item = this.valueIn(binding, input);
          // A NULL key never matches: the binding has no rows for this lookup.
          if (item === null || item instanceof Uint8Array) break;
          key.push(item);
        }
        const complete = key.length === definition.keyInputs.length;
        keys.push(complete ? key : undefined);
        if (complete) requested.push({ indexId: definition.indexId, key });
      }
      this.pending.set(binding, keys);
    }
    return requested;
  }

  private stageLookups(stage: number): number[] {
    return this.source.lookups.flatMap((lookup, index) => (lookup.stage === stage ? [index] : []));
  }

  /** Steps 3–4 for one stage: each binding is extended by every combination of its lookups' index rows. */
  applyStage(
    stage: number,
    rowsOf: (indexId: number, key: BucketParameterValue[]) => ReadonlyArray<Readonly<Record<string, SqliteValue>>>
  ): void {
    const stageLookups = this.stageLookups(stage);
    if (stageLookups.length === 0) return;
    const next: Binding[] = [];
    const seen = new Set<string>();
    for (const binding of this.bindings) {
      const keys = this.pending.get(binding) ?? [];
      let combinations: Binding[] = [binding];
      stageLookups.forEach((lookup, position) => {
        const key = keys[position];
        const rows = key === undefined ? [] : rowsOf(this.source.lookups[lookup]!.indexId, key);
        combinations = combinations.flatMap((partial) =>
          rows.map((row) => {
            const lookups = [...partial.lookups];
            lookups[lookup] = row;
            return { row: partial.row, lookups };
          })
        );
      });
      for (const combination of combinations) {
        const identity = JSON.stringify([combination.row, combination.lookups], (_, item: unknown) =>
          typeof item === 'bigint' ? `${item}n` : item
        );
        if (seen.has(identity)) continue;
        seen.add(identity);
        next.push(combination);
      }
      if (next.length > MAX_BINDINGS) throw new EvaluationFailure(`More than ${MAX_BINDINGS} parameter combinations`);
    }
    this.bindings = next;
  }

  /** Steps 5–6: one parameter tuple per binding whose values agree. */
  buckets(): BucketParameterValue[][] {
    const tuples: BucketParameterValue[][] = [];
    const seen = new Set<string>();
    for (const binding of this.bindings) {
      const tuple: BucketParameterValue[] = [];
      for (const values of this.source.parameters) {
        let chosen: BucketParameterValue | undefined;
        let ok = true;
        for (const reference of values) {
          const item = this.valueIn(binding, reference);
          if (item === null || item instanceof Uint8Array) {
            ok = false;
            break;
          }
          if (chosen === undefined) chosen = item;
          else if (!sameBucketParameter(chosen, item)) {
            ok = false;
            break;
          }
        }
        if (!ok || chosen === undefined) break;
        tuple.push(chosen);
      }
      if (tuple.length !== this.source.parameters.length) continue;
      const text = serializeBucketParameters(tuple);
      if (seen.has(text)) continue;
      seen.add(text);
      tuples.push(tuple);
    }
    return tuples;
  }
}
