/**
 * Compiles the queries of one Sync Stream into bucket sources (STREAMS.md §4.1): each query's filter becomes an
 * OR of AND-terms, each AND-term a candidate with request filters, staged parameter-index lookups (§4.4) and
 * a row evaluator whose partition keys select the bucket. Identical candidates of a stream are merged.
 *
 * It runs only on queries that passed `stream-query-check.ts`, so it can rely on its scoping and §3.7 rules;
 * what it still finds wrong is reported as a {@link SqlSyntaxError} (the load fails, never a crash).
 *
 * Expressions are translated into the internal AST of `sql/ast.ts` and evaluated by `expression.ts`. Every
 * column reference is rewritten to a key `<source id>.<column>` of a composite row, so one compiled expression
 * can read a table row, the `json_each` rows attached to it and connection data at the same time.
 */
import type { Expr, From, SelectFromStatement, Statement } from 'pgsql-ast-parser';
import { parse } from 'pgsql-ast-parser';
import { OVERLAP_FUNCTION, STREAM_NOT_FUNCTION } from '../expression.js';
import { childExpressions, type Expression } from '../sql/ast.js';
import { Translator } from '../sql/parser.js';
import { SqlSyntaxError } from '../sql/syntax-error.js';
import { DEFAULT_SCHEMA, type SourceTable } from '../source-table.js';
import type { CheckedCte } from './stream-query-check.js';

/** The pseudo-node of connection data (and constants) in the link graph. */
const CONNECTION_NODE = 'conn';

/** A physical table or a `json_each` in some FROM clause; ids are unique within one stream query. */
export interface CompiledSource {
  id: string;
  kind: 'table' | 'json_each';
  /** For tables. */
  table?: SourceTable;
  /** For tables: the alias, if one was written (the synced table name, §3.6). */
  alias?: string;
  /** For `json_each`: its argument, and the node it depends on (a table id, or {@link CONNECTION_NODE}). */
  argument?: Expression;
  attachedTo?: string;
}

type OutputColumn = { kind: 'star'; source: string } | { kind: 'expression'; name: string; expression: Expression };

/** An atom of an AND-term (§3.7). */
type Atom =
  | { kind: 'filter'; expression: Expression; node: string }
  | { kind: 'link'; a: { expression: Expression; node: string }; b: { expression: Expression; node: string } };

/** Where a bucket parameter or index key value comes from at resolution time. */
export type ValueReference =
  { kind: 'connection'; expression: Expression } | { kind: 'lookup'; lookup: number; output: number };

export interface CompiledLookup {
  /** Number of the index within the stream (the `queryIndex` of its {@link ParameterLookup}s). */
  indexId: number;
  stage: number;
  source: CompiledSource;
  /** `json_each` sources attached to the table that its expressions read. */
  attached: CompiledSource[];
  filters: Expression[];
  keyExpressions: Expression[];
  keyInputs: ValueReference[];
  outputs: Expression[];
}

export interface CompiledRowEvaluator {
  source: CompiledSource;
  attached: CompiledSource[];
  columns: OutputColumn[];
  filters: Expression[];
  /** In the bucket source's canonical key order. */
  partitionKeys: Expression[];
}

export interface CompiledBucketSource {
  /** `<n>` of the bucket id: the index of the first merged candidate within the stream (§4.2). */
  index: number;
  requestFilters: Expression[];
  /** `json_each` over connection data used by request values: expanded per subscription. */
  connectionEach: CompiledSource[];
  lookups: CompiledLookup[];
  /** One value list per partition key; several values are intersected (§4.5 step 5). */
  parameters: ValueReference[][];
  evaluators: CompiledRowEvaluator[];
}

interface DerivedSource {
  kind: 'derived';
  name: string;
  columns: Map<string, Expression>;
  /** Output column names in order (for `*` over a derived source). */
  order: string[];
}

interface ScopeEntry {
  name: string;
  source: CompiledSource | DerivedSource;
}

interface Scope {
  entries: ScopeEntry[];
  parent?: Scope;
}

interface SelectResult {
  columns: OutputColumn[];
  terms: Atom[][];
  /** Tables of this select's FROM (including those of FROM subqueries): part of every term. */
  tables: string[];
}

const MAX_TERMS = 100;

/** Compiles one stream query (already checked) into bucket source candidates, in normalised term order. */
class QueryCompiler {
  readonly sources = new Map<string, CompiledSource>();
  private nextId = 0;
  private readonly translator: Translator;

  constructor(
    private readonly sql: string,
    private readonly query: number,
    private readonly ctes: ReadonlyMap<string, CheckedCte>,
    private readonly edition: number
  ) {
    this.translator = new Translator(sql);
  }

  private fail(message: string, node?: { _location?: { start: number; end: number } }): never {
    throw new SqlSyntaxError(message, node?._location?.start ?? 0, node?._location?.end ?? this.sql.length);
  }

  private register(source: Omit<CompiledSource, 'id'>): CompiledSource {
    const registered: CompiledSource = { ...source, id: `q${this.query}s${this.nextId++}` };
    this.sources.set(registered.id, registered);
    return registered;
  }

  select(statement: SelectFromStatement, parent: Scope | undefined, isCte: boolean): SelectResult {
    const scope: Scope = { entries: [], ...(parent ? { parent } : {}) };
    let terms: Atom[][] = [[]];
    const tables: string[] = [];
    const conditions: Array<{ expression: Expr; scope: Scope }> = [];
    for (const item of statement.from ?? []) {
      const entry = this.fromItem(item, scope, isCte);
      scope.entries.push({ name: entry.name, source: entry.source });
      if (entry.inner) {
        terms = product(terms, entry.inner.terms);
        tables.push(...entry.inner.tables);
      }
      if (entry.source.kind === 'table') tables.push(entry.source.id);
      if (item.join?.on) conditions.push({ expression: item.join.on, scope });
    }
    if (statement.where) conditions.push({ expression: statement.where, scope });
    const columns: OutputColumn[] = [];
    for (const column of statement.columns ?? []) {
      const expression = column.expr;
      if (expression.type === 'ref' && expression.name === '*') {
        const qualifier = expression.table?.name;
        const entries = qualifier === undefined ? scope.entries : scope.entries.filter((e) => e.name === qualifier);
        for (const entry of entries) {
          if (entry.source.kind === 'derived') {
            for (const name of entry.source.order)
              columns.push({ kind: 'expression', name, expression: entry.source.columns.get(name)! });
          } else columns.push({ kind: 'star', source: entry.source.id });
        }
        continue;
      }
      const name =
        column.alias?.name ??
        (expression.type === 'ref'
          ? expression.name
          : this.sql.slice(column._location?.start ?? 0, column._location?.end ?? 0));
      columns.push({ kind: 'expression', name, expression: this.expression(expression, scope) });
    }
    for (const condition of conditions)
      terms = product(terms, this.terms(condition.expression, condition.scope, false));
    return { columns, terms, tables };
  }

  private fromItem(
    item: From,
    scope: Scope,
    isCte: boolean
  ): { name: string; source: CompiledSource | DerivedSource; inner?: SelectResult } {
    if (item.type === 'table') {
      const name = item.name.name;
      const cte = item.name.schema === undefined && !isCte ? this.ctes.get(name.toLowerCase()) : undefined;
      const alias = item.name.alias ?? name;
      if (cte) {
        if (!cte.statement) this.fail(`CTE "${cte.name}" could not be compiled`, item);
        const inner = this.select(cte.statement, undefined, true);
        return { name: alias, source: this.derived(alias, inner, cte.columns), inner };
      }
      const source = this.register({
        kind: 'table',
        table: { schema: item.name.schema ?? DEFAULT_SCHEMA, name, wildcard: name.endsWith('%') },
        ...(item.name.alias !== undefined ? { alias: item.name.alias } : {})
      });
      return { name: alias, source };
    }
    if (item.type === 'statement') {
      if (item.statement.type !== 'select') this.fail('Only a plain SELECT is allowed as a subquery in FROM', item);
      const inner = this.select(item.statement, undefined, isCte);
      const names =
        item.columnNames && item.columnNames.length > 0
          ? item.columnNames.map((column) => column.name)
          : inner.columns.map((column) => (column.kind === 'expression' ? column.name : ''));
      return { name: item.alias, source: this.derived(item.alias, inner, names), inner };
    }
    const argument = this.expression(item.args[0]!, scope);
    const nodes = this.nodes(argument);
    return {
      name: item.alias?.name ?? 'json_each',
      source: this.register({
        kind: 'json_each',
        argument,
        attachedTo: nodes[0] ?? CONNECTION_NODE
      })
    };
  }

  private derived(name: string, inner: SelectResult, names: string[]): DerivedSource {
    const columns = new Map<string, Expression>();
    inner.columns.forEach((column, index) => {
      if (column.kind === 'expression') columns.set(names[index] ?? column.name, column.expression);
    });
    return { kind: 'derived', name, columns, order: [...columns.keys()] };
  }

  /** A pgsql expression as an internal one, with column references resolved to composite-row keys. */
  expression(node: Expr, scope: Scope): Expression {
    return this.rewrite(this.translator.expression(desugar(node)), scope);
  }

  private lookupEntry(name: string, scope: Scope | undefined): ScopeEntry | undefined {
    for (let current = scope; current; current = current.parent) {
      const entry = current.entries.find((candidate) => candidate.name === name);
      if (entry) return entry;
    }
    return undefined;
  }

  private rewrite(expression: Expression, scope: Scope): Expression {
    switch (expression.type) {
      case 'literal':
        return expression;
      case 'column': {
        const entry =
          expression.qualifier !== undefined
            ? this.lookupEntry(expression.qualifier, scope)
            : scope.entries.length === 1
              ? scope.entries[0]
              : undefined;
        if (!entry) throw new SqlSyntaxError(`Unknown column "${expression.name}"`, expression.start, expression.end);
        if (entry.source.kind === 'derived') {
          const inner = entry.source.columns.get(expression.name);
          if (!inner)
            throw new SqlSyntaxError(
              `"${entry.name}" has no column "${expression.name}"`,
              expression.start,
              expression.end
            );
          return inner;
        }
        return {
          type: 'column',
          name: `${entry.source.id}.${expression.name}`,
          start: expression.start,
          end: expression.end
        };
      }
      case 'call': {
        const namespace = expression.namespace;
        const entry = namespace !== undefined ? this.lookupEntry(namespace, scope) : undefined;
        if (entry && entry.source.kind === 'table')
          return {
            type: 'column',
            name: `${entry.source.id}.#${expression.name.toLowerCase()}`,
            start: expression.start,
            end: expression.end
          };
        return { ...expression, args: expression.args.map((arg) => this.rewrite(arg, scope)) };
      }
      case 'unary':
      case 'cast':
        return { ...expression, operand: this.rewrite(expression.operand, scope) };
      case 'binary':
        return {
          ...expression,
          left: this.rewrite(expression.left, scope),
          right: this.rewrite(expression.right, scope)
        };
      case 'in_list':
        return {
          ...expression,
          left: this.rewrite(expression.left, scope),
          items: expression.items.map((item) => this.rewrite(item, scope))
        };
      case 'in_array':
        return {
          ...expression,
          left: this.rewrite(expression.left, scope),
          right: this.rewrite(expression.right, scope)
        };
    }
  }

  /** The nodes an expression reads: table ids (a table's `json_each` counts as the table) or `conn`. */
  nodes(expression: Expression): string[] {
    const nodes = new Set<string>();
    const visit = (node: Expression): void => {
      if (node.type === 'column') {
        const source = this.sources.get(node.name.slice(0, node.name.indexOf('.')));
        if (source?.kind === 'json_each') nodes.add(source.attachedTo ?? CONNECTION_NODE);
        else if (source) nodes.add(source.id);
        return;
      }
      if (node.type === 'call' && node.namespace !== undefined) nodes.add(CONNECTION_NODE);
      for (const child of childExpressions(node)) visit(child);
    };
    visit(expression);
    return [...nodes];
  }

  private filter(expression: Expression, negated: boolean): Atom[][] {
    const nodes = this.nodes(expression);
    // NOT of a filter follows the reference: NOT NULL is true (§3.4 quirk, kept for parity).
    const body: Expression = negated
      ? { type: 'call', name: STREAM_NOT_FUNCTION, args: [expression], start: expression.start, end: expression.end }
      : expression;
    return [[{ kind: 'filter', expression: body, node: nodes.length === 1 ? nodes[0]! : CONNECTION_NODE }]];
  }

  private link(a: Expression, b: Expression): Atom[][] {
    const nodeOf = (expression: Expression) => this.nodes(expression)[0] ?? CONNECTION_NODE;
    return [[{ kind: 'link', a: { expression: a, node: nodeOf(a) }, b: { expression: b, node: nodeOf(b) } }]];
  }

  /** A `json_each` over `expression`, attached to the node it reads; returns its `value` column. */
  private each(expression: Expression): Expression {
    const source = this.register({
      kind: 'json_each',
      argument: expression,
      attachedTo: this.nodes(expression)[0] ?? CONNECTION_NODE
    });
    return { type: 'column', name: `${source.id}.value`, start: expression.start, end: expression.end };
  }

  private terms(node: Expr, scope: Scope, negated: boolean): Atom[][] {
    if (node.type === 'binary' && (node.op === 'AND' || node.op === 'OR')) {
      const left = this.terms(node.left, scope, negated);
      const right = this.terms(node.right, scope, negated);
      if ((node.op === 'AND') !== negated) return product(left, right);
      if (left.length + right.length > MAX_TERMS) this.fail('The filter expands to too many OR-of-AND terms', node);
      return [...left, ...right];
    }
    if (node.type === 'unary' && node.op === 'NOT') return this.terms(node.operand, scope, !negated);
    // Edition 3 compiles `a != b` as `NOT (a = b)`, so NULL operands keep the row (§3.4); edition 2 does not.
    if (node.type === 'binary' && node.op === '!=' && this.edition >= 3)
      return this.terms({ ...node, op: '=' }, scope, !negated);
    if (node.type === 'binary' && node.op === '=' && !negated) {
      const left = this.expression(node.left, scope);
      const right = this.expression(node.right, scope);
      const [l, r] = [this.nodes(left), this.nodes(right)];
      if (l.length === 1 && r.length === 1 && l[0] !== r[0]) return this.link(left, right);
      return this.filter(this.expression(node, scope), false);
    }
    if (node.type === 'binary' && (node.op === 'IN' || node.op === 'NOT IN' || node.op === '&&')) {
      const positive = !negated && node.op !== 'NOT IN';
      const left = this.expression(node.left, scope);
      const right = node.right;
      const cte =
        right.type === 'ref' && right.table === undefined ? this.ctes.get(right.name.toLowerCase()) : undefined;
      let inner: SelectResult | undefined;
      if (right.type === 'select') inner = this.select(right, scope, false);
      else if (cte) {
        if (!cte.statement) this.fail(`CTE "${cte.name}" could not be compiled`, right);
        inner = this.select(cte.statement, undefined, true);
      }
      if (inner) {
        if (!positive) this.fail('NOT IN (SELECT …) cannot be expressed as bucket parameters', node);
        const [column] = inner.columns;
        if (column?.kind !== 'expression') this.fail('A subquery in IN/&& must select exactly one column', right);
        const output = node.op === '&&' ? this.each(column.expression) : column.expression;
        const value = node.op === '&&' ? this.each(left) : left;
        let terms = this.link(value, output);
        terms = product(terms, inner.terms);
        // Every table of the subquery takes part even when no condition mentions it (an existence check).
        return terms.map((term) => [...term, ...inner.tables.map((id) => tableMarker(id))]);
      }
      if (right.type === 'array' || right.type === 'list') {
        if (right.type === 'list') this.fail('IN with a parenthesised value list is not supported', right);
        const items = right.expressions.map((item) => this.expression(item, scope));
        return this.filter(
          { type: 'in_list', left, items, negated: false, start: left.start, end: items.at(-1)?.end ?? left.end },
          !positive
        );
      }
      const array = this.expression(right, scope);
      const [l, r] = [this.nodes(left), this.nodes(array)];
      const sameNode = (l[0] ?? CONNECTION_NODE) === (r[0] ?? CONNECTION_NODE);
      if (node.op === '&&') {
        if (sameNode || !positive) {
          const overlap: Expression = {
            type: 'call',
            name: OVERLAP_FUNCTION,
            args: [left, array],
            start: left.start,
            end: array.end
          };
          return this.filter(overlap, !positive);
        }
        return this.link(this.each(left), this.each(array));
      }
      if (sameNode || !positive)
        return this.filter(
          { type: 'in_array', left, right: array, negated: false, start: left.start, end: array.end },
          !positive
        );
      return this.link(left, this.each(array));
    }
    return this.filter(this.expression(node, scope), negated);
  }
}

/** A table that must take part in a term without a condition of its own: a filter that is always true. */
function tableMarker(id: string): Atom {
  return { kind: 'filter', expression: { type: 'literal', value: 1n, start: 0, end: 0 }, node: id };
}

function product(left: Atom[][], right: Atom[][]): Atom[][] {
  if (left.length * right.length > MAX_TERMS)
    throw new SqlSyntaxError(`The filter expands to more than ${MAX_TERMS} OR-of-AND terms`, 0, 0);
  return left.flatMap((a) => right.map((b) => [...a, ...b]));
}

/** CASE and BETWEEN (§3.2) in terms the internal AST has: nested `iif()` and two comparisons. */
function desugar(node: Expr): Expr {
  if (node === null || typeof node !== 'object') return node;
  if (node.type === 'case') {
    const location = node._location;
    let result: Expr = node.else ? desugar(node.else) : { type: 'null', ...(location ? { _location: location } : {}) };
    for (const branch of [...node.whens].reverse()) {
      const condition: Expr = node.value
        ? { type: 'binary', op: '=', left: desugar(node.value), right: desugar(branch.when) }
        : desugar(branch.when);
      result = {
        type: 'call',
        function: { name: 'iif' },
        args: [condition, desugar(branch.value), result],
        ...(location ? { _location: location } : {})
      };
    }
    return result;
  }
  if (node.type === 'unary' && /^IS (NOT )?(TRUE|FALSE)$/.test(node.op)) {
    // `x IS TRUE` is never NULL: truthy → 1, else 0; IS FALSE also needs x to be non-NULL (SQLite).
    const operand = desugar(node.operand);
    const wantTrue = node.op.endsWith('TRUE');
    const negate = node.op.includes('NOT');
    const one: Expr = { type: 'integer', value: 1 };
    const zero: Expr = { type: 'integer', value: 0 };
    const iif = (...args: Expr[]): Expr => ({ type: 'call', function: { name: 'iif' }, args });
    const isTrue = iif(operand, one, zero);
    const isFalse = iif({ type: 'unary', op: 'IS NULL', operand }, zero, iif(operand, zero, one));
    const base = wantTrue ? isTrue : isFalse;
    return negate ? iif(base, zero, one) : base;
  }
  if (node.type === 'ternary') {
    const value = desugar(node.value);
    const between: Expr = {
      type: 'binary',
      op: 'AND',
      left: { type: 'binary', op: '>=', left: value, right: desugar(node.lo) },
      right: { type: 'binary', op: '<=', left: value, right: desugar(node.hi) },
      ...(node._location ? { _location: node._location } : {})
    };
    return node.op === 'NOT BETWEEN' ? { type: 'unary', op: 'NOT', operand: between } : between;
  }
  const copy: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === '_location') copy[key] = value;
    else if (Array.isArray(value)) copy[key] = value.map((item: unknown) => (isExpr(item) ? desugar(item) : item));
    else copy[key] = isExpr(value) ? desugar(value) : value;
  }
  return copy as unknown as Expr;
}

function isExpr(value: unknown): value is Expr {
  return value !== null && typeof value === 'object' && typeof (value as { type?: unknown }).type === 'string';
}

/** Stable text of an expression (positions dropped, source ids renamed), for canonical order and merging. */
function serialize(expression: Expression, rename: (id: string) => string): string {
  const text = (node: Expression): string => {
    switch (node.type) {
      case 'literal':
        return typeof node.value === 'bigint'
          ? `${node.value}n`
          : node.value instanceof Uint8Array
            ? `x'${Buffer.from(node.value).toString('hex')}'`
            : JSON.stringify(node.value);
      case 'column': {
        const dot = node.name.indexOf('.');
        return `${rename(node.name.slice(0, dot))}${node.name.slice(dot)}`;
      }
      case 'call':
        return `${node.namespace ?? ''}.${node.name.toLowerCase()}(${node.args.map(text).join(',')})`;
      case 'unary':
        return `(${node.operator} ${text(node.operand)})`;
      case 'cast':
        return `cast(${text(node.operand)} as ${node.targetType})`;
      case 'binary':
        return `(${text(node.left)} ${node.operator} ${text(node.right)})`;
      case 'in_list':
        return `(${text(node.left)} ${node.negated ? 'not in' : 'in'} [${node.items.map(text).join(',')}])`;
      case 'in_array':
        return `(${text(node.left)} ${node.negated ? 'not in' : 'in'} ${text(node.right)})`;
    }
  };
  return text(expression);
}

/** Source ids an expression reads (composite-row prefixes). */
function sourceIdsOf(expression: Expression): Set<string> {
  const ids = new Set<string>();
  const visit = (node: Expression): void => {
    if (node.type === 'column') ids.add(node.name.slice(0, node.name.indexOf('.')));
    for (const child of childExpressions(node)) visit(child);
  };
  visit(expression);
  return ids;
}

interface Candidate {
  index: number;
  signature: string;
  source: CompiledBucketSource;
}

/** Builds the bucket source candidate of one AND-term (§3.7 "meaning of a valid AND-term", §4.4 stages). */
function buildCandidate(
  compiler: QueryCompiler,
  term: Atom[],
  primary: CompiledSource,
  columns: OutputColumn[],
  index: number
): Candidate {
  const fail = (message: string): never => {
    throw new SqlSyntaxError(message, 0, 0);
  };
  const tables = new Set<string>([primary.id]);
  for (const atom of term) {
    for (const node of atom.kind === 'filter' ? [atom.node] : [atom.a.node, atom.b.node])
      if (node !== CONNECTION_NODE) tables.add(node);
  }
  const filtersOf = (node: string) =>
    term.flatMap((atom) => (atom.kind === 'filter' && atom.node === node ? [atom.expression] : []));
  const links = term.filter((atom): atom is Extract<Atom, { kind: 'link' }> => atom.kind === 'link');

  // Distance of every table from the primary over table-to-table links: lookups flow towards the primary.
  const distance = new Map<string, number>([[primary.id, 0]]);
  for (let frontier = [primary.id]; frontier.length > 0;) {
    const next: string[] = [];
    for (const node of frontier)
      for (const link of links) {
        const ends = [link.a.node, link.b.node];
        if (!ends.includes(node)) continue;
        const other = ends[0] === node ? ends[1]! : ends[0]!;
        if (other === CONNECTION_NODE || distance.has(other)) continue;
        distance.set(other, distance.get(node)! + 1);
        next.push(other);
      }
    frontier = next;
  }
  const order = [...tables]
    .filter((id) => id !== primary.id)
    .sort((x, y) => (distance.get(y) ?? Infinity) - (distance.get(x) ?? Infinity) || compareIds(x, y));
  const position = new Map(order.map((id, i) => [id, i]));
  const lookupOf = new Map<string, number>();
  const lookups: CompiledLookup[] = [];
  const attachedOf = (table: string, expressions: Expression[]): CompiledSource[] => {
    const ids = new Set<string>();
    for (const expression of expressions) for (const id of sourceIdsOf(expression)) ids.add(id);
    return [...ids]
      .map((id) => compiler.sources.get(id)!)
      .filter((source) => source.kind === 'json_each' && source.attachedTo === table)
      .sort((x, y) => compareIds(x.id, y.id));
  };
  const valueOf = (side: { expression: Expression; node: string }): ValueReference => {
    if (side.node === CONNECTION_NODE) return { kind: 'connection', expression: side.expression };
    const lookup = lookupOf.get(side.node);
    if (lookup === undefined) return fail('internal: lookup used before it is resolved');
    const target = lookups[lookup]!;
    let output = target.outputs.findIndex((existing) => existing === side.expression);
    if (output < 0) output = target.outputs.push(side.expression) - 1;
    return { kind: 'lookup', lookup, output };
  };
  for (const id of order) {
    const keyExpressions: Expression[] = [];
    const keyInputs: ValueReference[] = [];
    let stage = 1;
    for (const link of links) {
      const mine = link.a.node === id ? link.a : link.b.node === id ? link.b : undefined;
      if (!mine) continue;
      const other = mine === link.a ? link.b : link.a;
      const earlier = other.node === CONNECTION_NODE || (position.get(other.node) ?? Infinity) < position.get(id)!;
      if (!earlier) continue;
      keyExpressions.push(mine.expression);
      keyInputs.push(valueOf(other));
      if (other.node !== CONNECTION_NODE) stage = Math.max(stage, lookups[lookupOf.get(other.node)!]!.stage + 1);
    }
    lookupOf.set(id, lookups.length);
    lookups.push({
      indexId: 0,
      stage,
      source: compiler.sources.get(id)!,
      attached: [],
      filters: filtersOf(id),
      keyExpressions,
      keyInputs,
      outputs: []
    });
  }
  // Partition keys: every link to the primary, grouped by the primary-side expression.
  const keys = new Map<string, { expression: Expression; values: ValueReference[] }>();
  const rename = (id: string) => (id === primary.id ? 'ROW' : id);
  for (const link of links) {
    const mine = link.a.node === primary.id ? link.a : link.b.node === primary.id ? link.b : undefined;
    if (!mine) continue;
    const other = mine === link.a ? link.b : link.a;
    const text = serialize(mine.expression, rename);
    const key = keys.get(text) ?? { expression: mine.expression, values: [] };
    key.values.push(valueOf(other));
    keys.set(text, key);
  }
  for (const lookup of lookups)
    lookup.attached = attachedOf(lookup.source.id, [...lookup.filters, ...lookup.keyExpressions, ...lookup.outputs]);

  // Canonical names for everything the signature mentions, so equivalent candidates compare equal.
  const lookupNames = new Map(lookups.map((lookup, i) => [lookup.source.id, `L${i}`]));
  const connectionEach = new Map<string, CompiledSource>();
  const canonical = (id: string): string => {
    const lookupName = lookupNames.get(id);
    if (lookupName) return lookupName;
    const source = compiler.sources.get(id);
    if (source?.kind === 'json_each') {
      if (source.attachedTo === CONNECTION_NODE) {
        connectionEach.set(id, source);
        return `each(${serialize(source.argument!, canonical)})`;
      }
      return `${canonical(source.attachedTo!)}:each(${serialize(source.argument!, canonical)})`;
    }
    return id === primary.id ? 'ROW' : id;
  };
  const valueText = (value: ValueReference): string =>
    value.kind === 'connection' ? serialize(value.expression, canonical) : `L${value.lookup}.o${value.output}`;
  const sortedKeys = [...keys.values()]
    .map((key) => ({
      ...key,
      values: [...key.values].sort((x, y) => compareText(valueText(x), valueText(y))),
      text: serialize(key.expression, canonical)
    }))
    .map((key) => ({ ...key, valuesText: key.values.map(valueText).join('&') }))
    .sort((x, y) => compareText(x.valuesText, y.valuesText) || compareText(x.text, y.text));
  const requestFilters = filtersOf(CONNECTION_NODE);
  const signature = JSON.stringify({
    requestFilters: requestFilters.map((filter) => serialize(filter, canonical)).sort(compareText),
    lookups: lookups.map((lookup) => ({
      table: lookup.source.table,
      stage: lookup.stage,
      filters: lookup.filters.map((filter) => serialize(filter, canonical)).sort(compareText),
      keys: lookup.keyExpressions.map((key, i) => [serialize(key, canonical), valueText(lookup.keyInputs[i]!)]),
      outputs: lookup.outputs.map((output) => serialize(output, canonical))
    })),
    parameters: sortedKeys.map((key) => key.valuesText)
  });
  const partitionKeys = sortedKeys.map((key) => key.expression);
  const rowFilters = filtersOf(primary.id);
  const evaluator: CompiledRowEvaluator = {
    source: primary,
    attached: attachedOf(primary.id, [
      ...rowFilters,
      ...partitionKeys,
      ...columns.flatMap((column) => (column.kind === 'expression' ? [column.expression] : []))
    ]),
    columns,
    filters: rowFilters,
    partitionKeys
  };
  // Connection-side `json_each` read anywhere at resolution time.
  const resolutionExpressions = [
    ...requestFilters,
    ...lookups.flatMap((lookup) => lookup.keyInputs),
    ...sortedKeys.flatMap((key) => key.values)
  ].flatMap((item) => ('kind' in item ? (item.kind === 'connection' ? [item.expression] : []) : [item]));
  const eachIds = new Set<string>();
  for (const expression of resolutionExpressions)
    for (const id of sourceIdsOf(expression)) if (compiler.sources.get(id)?.kind === 'json_each') eachIds.add(id);
  return {
    index,
    signature,
    source: {
      index,
      requestFilters,
      connectionEach: [...eachIds].sort(compareIds).map((id) => compiler.sources.get(id)!),
      lookups,
      parameters: sortedKeys.map((key) => key.values),
      evaluators: [evaluator]
    }
  };
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Source ids in creation order (`q0s2` before `q0s10`). */
function compareIds(a: string, b: string): number {
  const number = (id: string) => id.match(/\d+/g)!.map(Number);
  const [x, y] = [number(a), number(b)];
  return x[0]! - y[0]! || x[1]! - y[1]! || compareText(a, b);
}

export interface StreamCompileInput {
  edition: number;
  queries: string[];
  ctes: ReadonlyMap<string, CheckedCte>;
}

/**
 * All bucket sources of a stream, merged (§4.1), with index ids assigned in order. Throws
 * {@link SqlSyntaxError} (with the query number in `query`) for queries it cannot compile.
 */
export function compileStream(input: StreamCompileInput): CompiledBucketSource[] {
  const candidates: Candidate[] = [];
  let counter = 0;
  input.queries.forEach((sql, queryIndex) => {
    try {
      const statements: Statement[] = parse(sql, { locationTracking: true });
      const statement = statements[0];
      if (statement?.type !== 'select') throw new SqlSyntaxError('Only SELECT statements are supported', 0, sql.length);
      const compiler = new QueryCompiler(sql, queryIndex, input.ctes, input.edition);
      const result = compiler.select(statement, undefined, false);
      const primaryIds = new Set<string>();
      for (const column of result.columns) {
        if (column.kind === 'star') primaryIds.add(column.source);
        else for (const node of compiler.nodes(column.expression)) primaryIds.add(node);
      }
      primaryIds.delete(CONNECTION_NODE);
      const [primaryId] = primaryIds;
      const primary = primaryId !== undefined ? compiler.sources.get(primaryId) : undefined;
      if (primaryIds.size !== 1 || primary?.kind !== 'table')
        throw new SqlSyntaxError('The select list must read exactly one table', 0, sql.length);
      for (const term of result.terms) {
        const withTables = [...term, ...result.tables.filter((id) => id !== primary.id).map(tableMarker)];
        candidates.push(buildCandidate(compiler, withTables, primary, result.columns, counter++));
      }
    } catch (error) {
      if (error instanceof SqlSyntaxError) throw Object.assign(error, { query: queryIndex });
      throw error;
    }
  });
  const merged: CompiledBucketSource[] = [];
  const bySignature = new Map<string, CompiledBucketSource>();
  for (const candidate of candidates) {
    const existing = bySignature.get(candidate.signature);
    if (existing) existing.evaluators.push(...candidate.source.evaluators);
    else {
      bySignature.set(candidate.signature, candidate.source);
      merged.push(candidate.source);
    }
  }
  let indexId = 0;
  for (const source of merged) for (const lookup of source.lookups) lookup.indexId = indexId++;
  return merged;
}
