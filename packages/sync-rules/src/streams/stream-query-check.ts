/**
 * Static checks of Sync Streams queries (STREAMS.md §3): the constructs §3.9 rejects, the edition-2 dialect
 * limits of §3.10, name scoping (§3.5), the result-column rules (§3.6) and the rule of §3.7 that row data of
 * two sources, or row data and connection data, meet only through a top-level `=` (or `IN` / `&&`).
 *
 * This checks; it does not compile. Queries are parsed with `pgsql-ast-parser`, the parser the bucket
 * definitions front end (`sql/parser.ts`) and the reference use, and its tree is walked directly because
 * the internal AST of `sql/ast.ts` models only the single-table bucket-definition subset.
 */
import {
  parse,
  type Expr,
  type From,
  type SelectedColumn,
  type SelectFromStatement,
  type Statement
} from 'pgsql-ast-parser';
import { MAX_QUERY_LENGTH, syntaxError } from '../sql/parser.js';

export interface QueryDiagnostic {
  severity: 'error' | 'warning';
  reason: string;
  start: number;
  end: number;
}

/** A CTE as a query sees it: its output column names (empty when its body failed to check). */
export interface CheckedCte {
  name: string;
  columns: string[];
  /** The parsed body, walked again at every use (each use is an independent copy of its rows, §3.8). */
  statement?: SelectFromStatement;
  /** False when the body has errors; those are reported once, at the CTE, not at every use. */
  valid: boolean;
}

export interface QueryCheckOptions {
  edition: number;
  /** CTEs visible to the query (local ones already shadowing global ones), by lower-cased name. */
  ctes?: ReadonlyMap<string, CheckedCte>;
  /** A CTE body is checked with the CTE rules of §3.8 (no `*`, no references to other CTEs). */
  isCteBody?: boolean;
}

export interface QueryCheckResult {
  diagnostics: QueryDiagnostic[];
  /** Lower-cased names of the CTEs the query uses. */
  referencedCtes: Set<string>;
  /** Whether the query reads `subscription.*` (edition 2 warns for `auto_subscribe` streams). */
  readsSubscription: boolean;
  /** Output column names (for a CTE body: its columns). */
  outputColumns: string[];
  /** The parsed SELECT, when it parsed (kept for CTE bodies). */
  statement?: SelectFromStatement;
  /** Number of OR-of-AND terms of the filter (bucket source candidates); undefined when not computed. */
  termCount?: number;
  /** Set when a bucket source is reachable with unauthenticated data only (§4.9): where to point the warning. */
  dangerous?: { start: number; end: number };
}

/** Most OR-of-AND terms one query may expand to (STREAMS §2.4, §6). */
const MAX_FILTER_TERMS = 100;

/** §4.9: how trustworthy the connection data behind a value is. */
type Trust = 'authenticated' | 'unauthenticated' | 'neutral';

/** §3.4: the stream function set, with its argument counts. */
const STREAM_FUNCTIONS: Record<string, [min: number, max: number]> = {
  hex: [1, 1],
  ifnull: [2, Infinity],
  iif: [3, 3],
  instr: [2, 2],
  length: [1, 1],
  lower: [1, 1],
  upper: [1, 1],
  substring: [2, 3],
  typeof: [1, 1],
  json_array_length: [1, 2],
  json_extract: [2, Infinity],
  unixepoch: [1, Infinity],
  datetime: [1, Infinity],
  base64: [1, 1],
  json_keys: [1, 1],
  uuid_blob: [1, 1],
  st_asgeojson: [1, 1],
  st_astext: [1, 1],
  st_x: [1, 1],
  st_y: [1, 1]
};
/** §3.10: edition 2 uses the bucket-definition function set, which adds `json_valid`. */
const EDITION_2_EXTRA_FUNCTIONS: Record<string, [number, number]> = { json_valid: [1, 1] };

const CAST_TYPES = new Set(['text', 'integer', 'real', 'numeric', 'blob']);
const CONNECTION_NAMESPACES = new Set(['auth', 'connection', 'subscription']);
const LEGACY_NAMESPACES = new Set(['request', 'token_parameters', 'user_parameters', 'bucket']);
const ROW_METADATA_FUNCTIONS = new Set(['schema', 'table_name', 'table_suffix']);
/** Operators with SQLite semantics in the evaluator; the bitwise ones are rejected (STREAMS §3.4, §6.1). */
const EXPRESSION_OPERATORS = new Set([
  '=',
  '!=',
  '<>',
  '<',
  '<=',
  '>',
  '>=',
  '+',
  '-',
  '*',
  '/',
  '%',
  '||',
  'AND',
  'OR',
  'IS',
  'IS NOT'
]);
/** The pseudo-source of connection data in dependency sets. */
const CONNECTION = 'connection';

interface ScopeSource {
  /** Name in scope: the alias, else the table or function name (lower-cased unless quoted). */
  name: string;
  kind: 'table' | 'derived' | 'json_each';
  /** For `table`: the table name (may be a `%` wildcard pattern). */
  table?: string;
  /** For `table`: written with an alias that is not double-quoted (and so folded to lower case). */
  unquotedAlias?: { start: number; end: number };
  /** Unique per source instance: each CTE reference is an independent copy (§3.8). */
  id: string;
  /** For `derived` (subquery or CTE in FROM): its output columns. */
  columns?: string[];
  /** For `derived`: what each output column reads inside it (references resolve through to its tables). */
  columnDependencies?: Map<string, Dependencies>;
  /** For `json_each`: the source (table id or `connection`) its argument depends on, if any. */
  attachedTo?: string;
  /** For `json_each` over connection data: the trust of that data. */
  trust?: Trust;
}

/** A checked SELECT: its outputs, and the filter conditions (its own and those of FROM subqueries / CTEs). */
interface SelectResult {
  columns: string[];
  columnDependencies: Dependencies[];
  columnExpressions: Array<Expr | undefined>;
  /** Sources the result columns read (for the outer query: the primary table). */
  primary: Set<string>;
  conditions: Array<{ expression: Expr; scope: Scope }>;
}

/** One atom of an AND-term, reduced to the nodes it reads: table source ids or `conn:<trust>`. */
interface Atom {
  nodes: string[];
  /** A top-level `=` (or IN/&&) between two different nodes: a bucket parameter or index link. */
  link: boolean;
}

class TooManyTerms extends Error {}

interface Scope {
  sources: ScopeSource[];
  parent?: Scope;
}

type Dependencies = Set<string>;

class StreamQueryChecker {
  readonly diagnostics: QueryDiagnostic[] = [];
  readonly referencedCtes = new Set<string>();
  readsSubscription = false;
  private nextSourceId = 0;
  /** While positive, diagnostics are dropped: parts already checked are walked again (CTE copies, normal form). */
  private silence = 0;
  /** While walking a CTE body, names in FROM are tables, never CTEs (§3.8). */
  private insideCte = 0;
  private readonly registry = new Map<string, ScopeSource>();

  constructor(
    private readonly sql: string,
    private readonly options: QueryCheckOptions
  ) {}

  error(reason: string, node: { _location?: { start: number; end: number } } | undefined): void {
    this.report('error', reason, node);
  }

  warn(reason: string, node: { _location?: { start: number; end: number } } | undefined): void {
    this.report('warning', reason, node);
  }

  private report(
    severity: QueryDiagnostic['severity'],
    reason: string,
    node: { _location?: { start: number; end: number } } | undefined
  ): void {
    if (this.silence > 0) return;
    const start = node?._location?.start ?? 0;
    const end = node?._location?.end ?? this.sql.length;
    this.diagnostics.push({ severity, reason, start, end: Math.max(end, start + 1) });
  }

  private get edition(): number {
    return this.options.edition;
  }

  topLevel(statements: Statement[]): SelectResult | undefined {
    const [first, second] = statements;
    if (!first) {
      this.error('Empty query; expected a SELECT statement', undefined);
      return undefined;
    }
    // The edition-3 reference ignores statements after the first; STREAMS §6.1 says report it.
    if (second) this.error('Only one statement per query is allowed', second);
    if (first.type === 'with' || first.type === 'with recursive') {
      this.error('WITH inside a query is not supported; declare CTEs under "with:" in the config', first);
      return undefined;
    }
    if (first.type === 'union' || first.type === 'union all') {
      this.error('UNION is not supported; use one query per SELECT (edition 3: "queries")', first);
      return undefined;
    }
    if (first.type !== 'select') {
      this.error(`Only SELECT statements are supported, found ${first.type.toUpperCase()}`, first);
      return undefined;
    }
    return this.select(first, undefined, this.options.isCteBody ? 'cte' : 'query');
  }

  /** Checks a SELECT; returns its outputs and filter conditions. */
  private select(
    statement: SelectFromStatement,
    parent: Scope | undefined,
    role: 'query' | 'cte' | 'subquery' | 'from'
  ): SelectResult {
    this.rejectClauses(statement);
    const scope: Scope = { sources: [], ...(parent ? { parent } : {}) };
    const from = statement.from ?? [];
    if (from.length === 0) this.error('A query needs FROM with a source table', statement);
    if (this.edition < 3 && role === 'query' && (from.length !== 1 || from[0]!.type !== 'table'))
      this.error(
        'Edition 2 streams select from exactly one table (joins, subqueries in FROM and CTEs need edition 3)',
        from[1] ?? from[0] ?? statement
      );
    const joinConditions: Expr[] = [];
    const innerConditions: SelectResult['conditions'] = [];
    for (const item of from) {
      const source = this.source(item, scope, innerConditions);
      if (!source) continue;
      if (scope.sources.some((other) => other.name === source.name))
        this.error(`Duplicate name "${source.name}" in FROM; give each source a distinct alias`, item);
      scope.sources.push(source);
      if (item.join) {
        if (item.join.type !== 'INNER JOIN')
          this.error(
            `${item.join.type} is not supported; only inner joins (JOIN … ON, or FROM a, b WHERE …)`,
            item.join
          );
        if (item.join.using) this.error('JOIN … USING is not supported; write JOIN … ON a.x = b.x', item.join);
        if (item.join.on) joinConditions.push(item.join.on);
      }
    }
    const result = this.resultColumns(statement.columns ?? [], scope, role, statement);
    const [primaryId] = result.primary;
    const primarySource = primaryId !== undefined ? this.registry.get(primaryId) : undefined;
    if (role === 'query' && this.edition >= 3 && primarySource?.unquotedAlias && from.length > 1)
      this.warn(
        `Rows sync under the alias "${primarySource.name}" (the table name when there are no joins); quote the alias ("${primarySource.name}") if that is intended`,
        { _location: primarySource.unquotedAlias }
      );
    const own = [...joinConditions, ...(statement.where ? [statement.where] : [])];
    for (const condition of own) this.condition(condition, scope, false);
    result.conditions = [...own.map((expression) => ({ expression, scope })), ...innerConditions];
    return result;
  }

  private rejectClauses(statement: SelectFromStatement): void {
    const clauses: Array<[unknown, string]> = [
      [statement.groupBy, 'GROUP BY'],
      [statement.having, 'HAVING'],
      [statement.orderBy, 'ORDER BY'],
      [statement.limit?.limit, 'LIMIT'],
      [statement.limit?.offset, 'OFFSET'],
      [statement.for, 'FOR …'],
      [statement.skip, 'SKIP']
    ];
    for (const [clause, name] of clauses)
      if (clause !== undefined && clause !== null)
        this.error(`${name} is not supported: stream queries select rows one by one`, statement);
    if (statement.distinct && statement.distinct !== 'all')
      this.error('SELECT DISTINCT is not supported: stream queries select rows one by one', statement);
  }

  private register(source: Omit<ScopeSource, 'id'>): ScopeSource {
    const registered = { ...source, id: `s${this.nextSourceId++}` };
    this.registry.set(registered.id, registered);
    return registered;
  }

  /** A subquery or CTE in FROM: references to its columns resolve to what they read inside it. */
  private derived(name: string, inner: SelectResult, columns: string[]): ScopeSource {
    const columnDependencies = new Map<string, Dependencies>();
    columns.forEach((column, index) => columnDependencies.set(column, inner.columnDependencies[index] ?? new Set()));
    return this.register({ name, kind: 'derived', columns, columnDependencies });
  }

  /** Where the alias after a FROM table is written (the parser gives no location for it) and whether it is quoted. */
  private aliasAfter(item: From): { start: number; end: number; quoted: boolean } | undefined {
    const end = item._location?.end;
    if (end === undefined) return undefined;
    const match = /^\s+(?:AS\s+)?("?)([^\s",]+)/i.exec(this.sql.slice(end));
    if (!match) return undefined;
    const start = end + match[0].length - match[2]!.length - match[1]!.length;
    return { start, end: end + match[0].length, quoted: match[1] === '"' };
  }

  /** Walks a CTE body again for one use; its problems were reported once, at the CTE. */
  private cteBody(cte: CheckedCte): SelectResult | undefined {
    if (!cte.statement || !cte.valid) return undefined;
    this.silence++;
    this.insideCte++;
    try {
      return this.select(cte.statement, undefined, 'from');
    } finally {
      this.silence--;
      this.insideCte--;
    }
  }

  private source(item: From, scope: Scope, innerConditions: SelectResult['conditions']): ScopeSource | undefined {
    if (item.type === 'table') {
      const name = item.name.name;
      const cte =
        item.name.schema === undefined && !this.options.isCteBody && this.insideCte === 0
          ? this.options.ctes?.get(name.toLowerCase())
          : undefined;
      const alias = item.name.alias ?? name;
      if (cte) {
        // A CTE body cannot reference other CTEs (§3.8): there the name always denotes a table.
        this.referencedCtes.add(cte.name);
        const inner = this.cteBody(cte);
        if (!inner) return this.register({ name: alias, kind: 'derived', columns: cte.columns });
        innerConditions.push(...inner.conditions);
        return this.derived(alias, inner, cte.columns);
      }
      const aliasText = item.name.alias !== undefined ? this.aliasAfter(item) : undefined;
      return this.register({
        name: alias,
        kind: 'table',
        table: name,
        ...(aliasText && !aliasText.quoted ? { unquotedAlias: aliasText } : {})
      });
    }
    if (item.type === 'statement') {
      const statement = item.statement;
      if (statement.type !== 'select') {
        this.error('Only a plain SELECT is allowed as a subquery in FROM', item);
        return undefined;
      }
      // A FROM subquery sees only the root scope: no correlation with the outer query (§3.5).
      const inner = this.select(statement, undefined, 'from');
      innerConditions.push(...inner.conditions);
      let columns = inner.columns;
      if (item.columnNames && item.columnNames.length > 0) {
        if (item.columnNames.length !== columns.length)
          this.error(
            `The column list of "${item.alias}" names ${item.columnNames.length} column(s), but its subquery has ${columns.length}`,
            item
          );
        columns = item.columnNames.map((column) => column.name);
      }
      return this.derived(item.alias, inner, columns);
    }
    // A table-valued function call.
    const functionName = item.function.name.toLowerCase();
    if (functionName !== 'json_each' || item.function.schema) {
      this.error(`Unknown table-valued function ${item.function.name}(); only json_each(…) is supported`, item);
      return undefined;
    }
    if (this.edition < 3) return undefined;
    if (item.args.length !== 1) this.error(`json_each() takes 1 argument, got ${item.args.length}`, item);
    const dependencies = new Set<string>();
    for (const argument of item.args)
      for (const dependency of this.expression(argument, scope)) dependencies.add(dependency);
    const attachedSources = [...dependencies].map((id) => this.registry.get(id));
    if (attachedSources.some((source) => source?.kind === 'json_each'))
      this.error('The argument of json_each() cannot depend on another json_each()', item);
    else if (dependencies.size > 1)
      this.error('The argument of json_each() must depend on one table, or only on connection data', item);
    const [attachedTo] = dependencies;
    return this.register({
      name: item.alias?.name ?? 'json_each',
      kind: 'json_each',
      ...(attachedTo !== undefined ? { attachedTo } : {}),
      ...(attachedTo === CONNECTION ? { trust: trustOf(item.args) } : {})
    });
  }

  private resultColumns(
    columns: SelectedColumn[],
    scope: Scope,
    role: 'query' | 'cte' | 'subquery' | 'from',
    statement: SelectFromStatement
  ): SelectResult {
    const names: string[] = [];
    const columnDependencies: Dependencies[] = [];
    const columnExpressions: Array<Expr | undefined> = [];
    const primary = new Set<string>();
    let sawAlias = false;
    let sawStar = false;
    for (const column of columns) {
      const expression = column.expr;
      if (expression.type === 'ref' && expression.name === '*') {
        if (role !== 'query') {
          this.error(
            '"*" is not allowed in a subquery or CTE: its columns must be known statically; list them',
            column
          );
          continue;
        }
        sawStar = true;
        if (sawAlias && this.edition >= 3)
          this.warn(
            '"*" after an aliased column: a row column with the same name overwrites the aliased value',
            column
          );
        const qualifier = expression.table?.name;
        const sources =
          qualifier === undefined ? scope.sources : scope.sources.filter((source) => source.name === qualifier);
        if (qualifier !== undefined && sources.length === 0)
          this.error(`Unknown table "${qualifier}" in "${qualifier}.*"`, column);
        else if (sources.length > 1)
          this.error(
            '"*" with several sources in FROM would select columns of several tables; write "alias.*"',
            column
          );
        for (const source of sources) {
          if (source.kind === 'json_each')
            this.error('Cannot select from json_each(); a stream syncs rows of a table', column);
          else if (source.columnDependencies)
            for (const inner of source.columnDependencies.values()) for (const id of inner) primary.add(id);
          else primary.add(source.id);
        }
        continue;
      }
      const dependencies = this.expression(expression, scope);
      columnDependencies.push(dependencies);
      columnExpressions.push(expression);
      // Only the outer query's columns become synced rows; a subquery or CTE column feeds a filter or a join.
      if (role === 'query' && dependencies.has(CONNECTION))
        this.error(
          'Connection data (auth.*, connection.*, subscription.*) cannot be selected; only row columns sync',
          column
        );
      for (const id of role === 'query' ? dependencies : []) {
        if (id === CONNECTION) continue;
        const source = this.registry.get(id);
        if (source?.kind === 'json_each')
          this.error('Columns of json_each() cannot be selected; only row columns sync', column);
        else primary.add(id);
      }
      const name = column.alias?.name ?? (expression.type === 'ref' ? expression.name : undefined);
      if (column.alias) sawAlias = true;
      if (name === undefined) {
        if (role === 'query' && this.edition >= 3)
          this.warn('Result column has no name: give it an alias with AS (its name is the expression text)', column);
        names.push(this.sql.slice(column._location?.start ?? 0, column._location?.end ?? 0));
      } else {
        if (role !== 'query' && names.includes(name)) this.error(`Duplicate output column name "${name}"`, column);
        names.push(name);
      }
    }
    if (role === 'query') {
      if (primary.size > 1) this.error('Result columns must all come from one table (the primary table)', statement);
      else if (primary.size === 0 && columns.length > 0 && role === 'query')
        this.error('The select list references no table: a stream must sync rows of a table', statement);
    }
    if (role === 'query' && this.edition < 3 && !sawStar && !names.includes('id'))
      this.error('Edition 2 stream queries must output an "id" column', statement);
    return { columns: names, columnDependencies, columnExpressions, primary, conditions: [] };
  }

  /**
   * A filter condition. `negated` tracks NOTs above it, as the OR-of-ANDs normalisation pushes NOT inwards:
   * a link between two sources is only valid un-negated (§3.7).
   */
  private condition(node: Expr, scope: Scope, negated: boolean): void {
    if (node.type === 'binary' && (node.op === 'AND' || node.op === 'OR')) {
      this.condition(node.left, scope, negated);
      this.condition(node.right, scope, negated);
      return;
    }
    if (node.type === 'unary' && node.op === 'NOT') {
      this.condition(node.operand, scope, !negated);
      return;
    }
    if (node.type === 'binary' && (node.op === 'IN' || node.op === 'NOT IN' || node.op === '&&')) {
      this.membership(node, scope, negated !== (node.op === 'NOT IN'));
      return;
    }
    if (node.type === 'binary' && (node.op === '=' || node.op === '!=')) {
      const left = this.expression(node.left, scope);
      const right = this.expression(node.right, scope);
      const isLink = node.op === '=' && !negated;
      if (left.size > 1 || right.size > 1) this.mixed(node);
      else if (!isLink && union(left, right).size > 1)
        this.error(
          `${node.op === '=' ? 'NOT (… = …)' : node.op} between ${this.describe(left)} and ${this.describe(right)} cannot be expressed as bucket parameters; only a top-level "=" can link them`,
          node
        );
      return;
    }
    const dependencies = this.expression(node, scope);
    if (dependencies.size > 1) this.mixed(node);
  }

  private mixed(node: Expr): void {
    this.error(
      'This condition mixes data of different sources (two tables, or a table and connection data); they can only be linked by a top-level "=", IN or &&',
      node
    );
  }

  private describe(dependencies: Dependencies): string {
    const [id] = dependencies;
    if (id === undefined) return 'a constant';
    if (id === CONNECTION) return 'connection data';
    return `row data of "${this.registry.get(id)?.name ?? '?'}"`;
  }

  /** `x [NOT] IN rhs` and `x && rhs` (§3.7's table of sugar). */
  private membership(node: Extract<Expr, { type: 'binary' }>, scope: Scope, negated: boolean): void {
    const left = this.expression(node.left, scope);
    if (left.size > 1) this.mixed(node.left);
    const right = node.right;
    if (right.type === 'select' || right.type === 'union' || right.type === 'union all' || right.type === 'with') {
      if (negated) {
        this.error('NOT IN (SELECT …) (or a negated IN/&& subquery) cannot be expressed as bucket parameters', node);
        return;
      }
      if (right.type !== 'select') {
        this.error('Only a plain SELECT is allowed as a subquery', right);
        return;
      }
      if (this.edition < 3 && left.size === 0)
        this.error('Edition 2: a constant on the left of IN (SELECT …) is not supported', node);
      if (this.edition < 3) this.edition2Subquery(right);
      const { columns } = this.select(right, scope, 'subquery');
      if (columns.length !== 1)
        this.error(`A subquery in IN/&& must select exactly one column, found ${columns.length}`, right);
      return;
    }
    const cte = this.cteNamed(right);
    if (cte) {
      this.referencedCtes.add(cte.name);
      if (negated) this.error(`NOT IN ${cte.name} (a CTE) cannot be expressed as bucket parameters`, node);
      else if (cte.valid && cte.columns.length !== 1)
        this.error(
          `"IN ${cte.name}" needs a CTE with exactly one column; "${cte.name}" has ${cte.columns.length}`,
          right
        );
      return;
    }
    if (right.type === 'list') {
      this.error(
        "IN with a parenthesised value list is not supported; use ARRAY['a', 'b'] or a JSON string '[\"a\",\"b\"]'",
        right
      );
      return;
    }
    if (right.type === 'array') {
      // Scalar sugar for `x = a OR x = b`: all elements must share x's source (§3.7).
      let all = left;
      for (const element of right.expressions) all = union(all, this.expression(element, scope));
      if (all.size > 1) this.mixed(node);
      return;
    }
    const rightDependencies = this.expression(right, scope);
    if (rightDependencies.size > 1) this.mixed(right);
    else if (negated && union(left, rightDependencies).size > 1)
      this.error(
        `NOT IN between ${this.describe(left)} and ${this.describe(rightDependencies)} cannot be expressed as bucket parameters`,
        node
      );
  }

  /** The CTE that `IN <name>` refers to, if `expression` is such a name. */
  private cteNamed(expression: Expr): CheckedCte | undefined {
    if (expression.type !== 'ref' || expression.table !== undefined) return undefined;
    if (this.options.isCteBody || this.insideCte > 0) return undefined;
    return this.options.ctes?.get(expression.name.toLowerCase());
  }

  /**
   * The filter as an OR of AND-terms (§3.7): NOT pushed inwards, AND distributed over OR, `IN (SELECT …)` and
   * `IN cte` desugared into a link plus the subquery's own conditions. Throws {@link TooManyTerms} past the limit.
   */
  normalForm(query: SelectResult): Atom[][] {
    this.silence++;
    try {
      let terms: Atom[][] = [[]];
      for (const { expression, scope } of query.conditions)
        terms = product(terms, this.terms(expression, scope, false));
      return terms;
    } finally {
      this.silence--;
    }
  }

  private terms(node: Expr, scope: Scope, negated: boolean): Atom[][] {
    if (node.type === 'binary' && (node.op === 'AND' || node.op === 'OR')) {
      const left = this.terms(node.left, scope, negated);
      const right = this.terms(node.right, scope, negated);
      // De Morgan: under NOT, AND behaves as OR and vice versa.
      const conjunction = (node.op === 'AND') !== negated;
      if (conjunction) return product(left, right);
      if (left.length + right.length > MAX_FILTER_TERMS) throw new TooManyTerms();
      return [...left, ...right];
    }
    if (node.type === 'unary' && node.op === 'NOT') return this.terms(node.operand, scope, !negated);
    const atom = (nodes: string[], link: boolean): Atom[][] => [[{ nodes, link }]];
    if (node.type === 'binary' && (node.op === '=' || node.op === '!=')) {
      const left = this.nodes(node.left, scope);
      const right = this.nodes(node.right, scope);
      const isLink = node.op === '=' && !negated && left.length === 1 && right.length === 1 && left[0] !== right[0];
      return atom([...new Set([...left, ...right])], isLink);
    }
    if (node.type === 'binary' && (node.op === 'IN' || node.op === 'NOT IN' || node.op === '&&')) {
      const positive = !negated && node.op !== 'NOT IN';
      const left = this.nodes(node.left, scope);
      const right = node.right;
      const cte = right.type === 'ref' ? this.cteNamed(right) : undefined;
      const inner =
        right.type === 'select' ? this.select(right, scope, 'subquery') : cte ? this.cteBody(cte) : undefined;
      if (inner) {
        const output = inner.columnDependencies[0] ?? new Set<string>();
        const outputNodes = this.canonical(output, inner.columnExpressions[0]);
        let terms = atom(
          [...new Set([...left, ...outputNodes])],
          positive && left.length === 1 && outputNodes.length === 1
        );
        for (const condition of inner.conditions)
          terms = product(terms, this.terms(condition.expression, condition.scope, false));
        return terms;
      }
      if (right.type === 'select' || right.type === 'list' || right.type === 'array' || cte) return atom(left, false);
      const rightNodes = this.nodes(right, scope);
      const isLink = positive && left.length === 1 && rightNodes.length === 1 && left[0] !== rightNodes[0];
      return atom([...new Set([...left, ...rightNodes])], isLink);
    }
    return atom(this.nodes(node, scope), false);
  }

  /** The nodes an expression reads: table source ids, or `conn:<trust>` for connection data. */
  private nodes(expression: Expr, scope: Scope): string[] {
    return this.canonical(this.expression(expression, scope), expression);
  }

  private canonical(dependencies: Dependencies, expression: Expr | undefined): string[] {
    const nodes = new Set<string>();
    for (const id of dependencies) {
      if (id === CONNECTION) {
        nodes.add(`conn:${expression ? trustOf([expression]) : 'neutral'}`);
        continue;
      }
      const source = this.registry.get(id);
      if (source?.kind !== 'json_each') nodes.add(id);
      else if (source.attachedTo === CONNECTION) nodes.add(`conn:${source.trust ?? 'neutral'}`);
      else if (source.attachedTo !== undefined) nodes.add(source.attachedTo);
      else nodes.add('conn:neutral');
    }
    return [...nodes];
  }

  /** §3.10: an edition-2 subquery is one table, one column, an AND-only filter without nested subqueries. */
  private edition2Subquery(statement: SelectFromStatement): void {
    const from = statement.from ?? [];
    if (from.length !== 1 || from[0]!.type !== 'table')
      this.error('Edition 2: a subquery selects from exactly one table', statement);
    const visit = (node: Expr | null | undefined): void => {
      if (!node) return;
      if (node.type === 'binary' && node.op === 'OR')
        this.error('Edition 2: OR is not supported inside a subquery', node);
      if (node.type === 'binary') {
        if (node.right.type === 'select') this.error('Edition 2: subqueries cannot be nested', node.right);
        visit(node.left);
        visit(node.right);
      }
    };
    visit(statement.where);
  }

  /** Checks an expression; returns the sources it reads (source ids, or `connection`). */
  private expression(node: Expr, scope: Scope): Dependencies {
    switch (node.type) {
      case 'string':
      case 'boolean':
      case 'null':
      case 'constant':
        return new Set();
      case 'integer':
      case 'numeric': {
        const text = this.sql.slice(node._location?.start ?? 0, node._location?.end ?? 0);
        if (text.trimStart().startsWith('-')) this.error('Unary minus is not supported; write 0 - x', node);
        return new Set();
      }
      case 'parameter':
        this.error(
          `Positional parameters (${node.name}) are not supported; use auth.*, connection.* or subscription.*`,
          node
        );
        return new Set();
      case 'ref':
        return this.columnReference(node, scope);
      case 'call':
        return this.call(node, scope);
      case 'unary':
        if (node.op === '-') this.error('Unary minus is not supported; write 0 - x', node);
        return this.expression(node.operand, scope);
      case 'binary': {
        if (node.op === 'LIKE' || node.op === 'NOT LIKE' || node.op === 'ILIKE' || node.op === 'NOT ILIKE') {
          this.error(`${node.op} is not supported in stream queries`, node);
        } else if (node.op === 'IN' || node.op === 'NOT IN' || node.op === '&&') {
          if (node.right.type === 'select' || node.right.type === 'list')
            this.error(
              'IN with a subquery or value list is only supported as a filter condition, not inside an expression',
              node
            );
        } else if (!EXPRESSION_OPERATORS.has(node.op)) {
          this.error(`Operator ${node.op} is not supported in stream queries`, node);
        }
        const right =
          node.right.type === 'select' || node.right.type === 'list'
            ? new Set<string>()
            : this.expression(node.right, scope);
        return union(this.expression(node.left, scope), right);
      }
      case 'ternary':
        return union(
          this.expression(node.value, scope),
          union(this.expression(node.lo, scope), this.expression(node.hi, scope))
        );
      case 'cast': {
        const target = 'name' in node.to ? node.to.name.toLowerCase() : 'array';
        if (!CAST_TYPES.has(target))
          this.error(
            `CAST to ${target.toUpperCase()} is not supported; use TEXT, INTEGER, REAL, NUMERIC or BLOB`,
            node
          );
        return this.expression(node.operand, scope);
      }
      case 'case': {
        let dependencies = node.value ? this.expression(node.value, scope) : new Set<string>();
        for (const branch of node.whens)
          dependencies = union(
            dependencies,
            union(this.expression(branch.when, scope), this.expression(branch.value, scope))
          );
        if (node.else) dependencies = union(dependencies, this.expression(node.else, scope));
        return dependencies;
      }
      case 'member':
        return this.expression(node.operand, scope);
      case 'select':
      case 'union':
      case 'union all':
      case 'with':
      case 'with recursive':
        this.error('A subquery is only supported on the right of IN or && in a filter', node);
        return new Set();
      case 'array':
        this.error('ARRAY[…] is only supported on the right of IN', node);
        return new Set();
      default:
        this.error(`Unsupported expression (${node.type}) in a stream query`, node);
        return new Set();
    }
  }

  private columnReference(node: Extract<Expr, { type: 'ref' }>, scope: Scope): Dependencies {
    if (node.name === '*') {
      this.error('"*" is only allowed as a result column', node);
      return new Set();
    }
    const qualifier = node.table?.name;
    if (qualifier !== undefined) {
      for (let current: Scope | undefined = scope; current; current = current.parent) {
        const source = current.sources.find((candidate) => candidate.name === qualifier);
        if (source) return this.sourceColumn(source, node);
      }
      if (CONNECTION_NAMESPACES.has(qualifier))
        this.error(`"${qualifier}.${node.name}" is not valid; use ${qualifier}.parameter('${node.name}')`, node);
      else this.error(`Unknown table or alias "${qualifier}"`, node);
      return new Set();
    }
    if (scope.sources.length === 1) return this.sourceColumn(scope.sources[0]!, node);
    if (scope.sources.length === 0) this.error(`Column "${node.name}" has no table in scope`, node);
    else
      this.error(
        `Column "${node.name}" is ambiguous with several sources in FROM; qualify it (alias.${node.name})`,
        node
      );
    return new Set();
  }

  private sourceColumn(source: ScopeSource, node: Extract<Expr, { type: 'ref' }>): Dependencies {
    if (source.kind === 'derived' && source.columns && !source.columns.includes(node.name))
      this.error(`"${source.name}" has no column "${node.name}" (its columns: ${source.columns.join(', ')})`, node);
    if (source.kind === 'json_each' && node.name !== 'value' && node.name !== 'key')
      this.error(`json_each() has the columns "value" and "key", not "${node.name}"`, node);
    return source.columnDependencies?.get(node.name) ?? new Set([source.id]);
  }

  private call(node: Extract<Expr, { type: 'call' }>, scope: Scope): Dependencies {
    const namespace = node.function.schema;
    const name = node.function.name.toLowerCase();
    if (node.distinct || node.orderBy || node.filter || node.over || node.withinGroup)
      this.error('DISTINCT, ORDER BY, FILTER and OVER are not supported in function calls', node);
    let dependencies = new Set<string>();
    for (const argument of node.args) dependencies = union(dependencies, this.expression(argument, scope));
    if (namespace !== undefined) {
      if (CONNECTION_NAMESPACES.has(namespace)) {
        const valid =
          (name === 'parameter' && node.args.length === 1) ||
          (name === 'parameters' && node.args.length === 0) ||
          (name === 'user_id' && namespace === 'auth' && node.args.length === 0);
        if (!valid)
          this.error(
            `${namespace}.${node.function.name}() is not a stream function; use ${namespace}.parameter(key), ${namespace}.parameters()${namespace === 'auth' ? ' or auth.user_id()' : ''}`,
            node
          );
        if (namespace === 'subscription') this.readsSubscription = true;
        if (dependencies.size > 0 && [...dependencies].some((id) => id !== CONNECTION))
          this.error(`The key of ${namespace}.parameter() may only use connection data`, node);
        return new Set([CONNECTION]);
      }
      if (LEGACY_NAMESPACES.has(namespace)) {
        this.error(
          `${namespace}.${node.function.name}() does not exist in streams; use auth.*, connection.* or subscription.*`,
          node
        );
        return new Set();
      }
      for (let current: Scope | undefined = scope; current; current = current.parent) {
        const source = current.sources.find((candidate) => candidate.name === namespace);
        if (!source) continue;
        if (!ROW_METADATA_FUNCTIONS.has(name) || node.args.length > 0)
          this.error(
            `${namespace}.${node.function.name}() is not supported; row metadata is schema(), table_name(), table_suffix()`,
            node
          );
        else if (source.kind !== 'table')
          this.error(`${namespace}.${name}() needs a table, not a subquery or json_each()`, node);
        else if (name === 'table_suffix' && !source.table?.endsWith('%') && this.edition >= 3)
          this.warn(
            `${namespace}.table_suffix() on "${source.table}", which is not a wildcard pattern ("name%"): it is always empty`,
            node
          );
        return new Set([source.id]);
      }
      this.error(`Unknown function ${namespace}.${node.function.name}()`, node);
      return dependencies;
    }
    if (name === 'random' || name === 'randomblob') {
      this.error(`${name}() is not deterministic and cannot be used in stream queries`, node);
      return dependencies;
    }
    const counts = STREAM_FUNCTIONS[name] ?? (this.edition < 3 ? EDITION_2_EXTRA_FUNCTIONS[name] : undefined);
    if (!counts) {
      this.error(`Unknown or unsupported function ${node.function.name}()`, node);
      return dependencies;
    }
    const [min, max] = counts;
    if (node.args.length < min || node.args.length > max) {
      const expected = max === Infinity ? `at least ${min}` : min === max ? `${min}` : `${min} to ${max}`;
      this.error(`${name}() takes ${expected} argument(s), got ${node.args.length}`, node);
    }
    return dependencies;
  }
}

function union(a: Dependencies, b: Dependencies): Dependencies {
  return new Set([...a, ...b]);
}

/** AND of two OR-of-ANDs: every pair of terms, concatenated. */
function product(left: Atom[][], right: Atom[][]): Atom[][] {
  if (left.length * right.length > MAX_FILTER_TERMS) throw new TooManyTerms();
  return left.flatMap((a) => right.map((b) => [...a, ...b]));
}

/** §4.9 rule 1 for request expressions: `auth.*` makes a value authenticated; `subscription.*` / `connection.*` alone do not. */
function trustOf(expressions: readonly unknown[]): Trust {
  let untrusted = false;
  const visit = (value: unknown): boolean => {
    if (value === null || typeof value !== 'object') return false;
    if (Array.isArray(value)) return value.some(visit);
    const node = value as { type?: unknown; function?: { schema?: unknown } };
    if (node.type === 'call' && node.function?.schema === 'auth') return true;
    if (node.type === 'call' && (node.function?.schema === 'subscription' || node.function?.schema === 'connection'))
      untrusted = true;
    return Object.values(node).some(visit);
  };
  if (expressions.some(visit)) return 'authenticated';
  // Reading no connection data at all counts as authenticated (a constant cannot be forged).
  return untrusted ? 'unauthenticated' : 'authenticated';
}

function mergeTrust(values: Trust[]): Trust {
  if (values.includes('authenticated')) return 'authenticated';
  if (values.includes('unauthenticated')) return 'unauthenticated';
  return 'neutral';
}

function nodeTrust(node: string): Trust | undefined {
  return node.startsWith('conn:') ? (node.slice('conn:'.length) as Trust) : undefined;
}

/**
 * §4.9 for one AND-term: the bucket parameters of the primary table, each classified by the connection data
 * it comes from (through chains of index tables), merged; only when that is neutral, the request filters.
 */
function classifyTerm(term: Atom[], primary: ReadonlySet<string>): Trust {
  const links = term.filter((atom) => atom.link);
  const lookupTrust = (table: string, visited: Set<string>): Trust => {
    visited.add(table);
    const inputs: Trust[] = [];
    for (const link of links) {
      if (!link.nodes.includes(table)) continue;
      const other = link.nodes.find((node) => node !== table)!;
      if (visited.has(other)) continue;
      inputs.push(nodeTrust(other) ?? lookupTrust(other, new Set(visited)));
    }
    return mergeTrust(inputs);
  };
  const parameters: Trust[] = [];
  for (const link of links) {
    const [a, b] = link.nodes as [string, string];
    const other = primary.has(a) ? b : primary.has(b) ? a : undefined;
    if (other === undefined || primary.has(other)) continue;
    parameters.push(nodeTrust(other) ?? lookupTrust(other, new Set(primary)));
  }
  const fromParameters = mergeTrust(parameters);
  if (fromParameters !== 'neutral') return fromParameters;
  const filters = term
    .filter((atom) => !atom.link && atom.nodes.length > 0 && atom.nodes.every((node) => node.startsWith('conn:')))
    .map((atom) => mergeTrust(atom.nodes.map((node) => nodeTrust(node)!)));
  return mergeTrust(filters);
}

/** Checks one stream query (or CTE body). Never throws. */
export function checkStreamQuery(sql: string, options: QueryCheckOptions): QueryCheckResult {
  const checker = new StreamQueryChecker(sql, options);
  const result = (outputColumns: string[]): QueryCheckResult => ({
    diagnostics: checker.diagnostics,
    referencedCtes: checker.referencedCtes,
    readsSubscription: checker.readsSubscription,
    outputColumns
  });
  if (sql.length > MAX_QUERY_LENGTH) {
    checker.error(`Query is longer than ${MAX_QUERY_LENGTH} characters`, undefined);
    return result([]);
  }
  let statements: Statement[];
  try {
    statements = parse(sql, { locationTracking: true });
  } catch (error) {
    const failure =
      error instanceof RangeError
        ? { message: 'Query is nested too deeply', start: 0, end: sql.length }
        : syntaxError(sql, error);
    // The shared message names the bucket-definition replacements; streams read parameters differently.
    const reason = failure.message.replace(
      'use request.parameters() or bucket.<name>',
      'use auth.*, connection.* or subscription.*'
    );
    checker.diagnostics.push({ severity: 'error', reason, start: failure.start, end: failure.end });
    return result([]);
  }
  const query = checker.topLevel(statements);
  const checked = result(query?.columns ?? []);
  if (statements[0]?.type === 'select') checked.statement = statements[0];
  // The normal form is only meaningful for a query that passed the checks (it reuses their scoping).
  if (!query || options.isCteBody || checked.diagnostics.some((diagnostic) => diagnostic.severity === 'error'))
    return checked;
  try {
    const terms = checker.normalForm(query);
    checked.termCount = terms.length;
    if (options.edition >= 3 && terms.some((term) => classifyTerm(term, query.primary) === 'unauthenticated')) {
      const untrusted = /\b(subscription|connection)\s*\.\s*parameters?\s*\(/i.exec(sql);
      checked.dangerous = untrusted
        ? { start: untrusted.index, end: untrusted.index + untrusted[0].length }
        : { start: 0, end: sql.length };
    }
  } catch (error) {
    if (!(error instanceof TooManyTerms)) throw error;
    checked.diagnostics.push({
      severity: 'error',
      reason: `The filter expands to more than ${MAX_FILTER_TERMS} OR-of-AND terms; move inner ORs into separate queries or streams`,
      start: 0,
      end: sql.length
    });
  }
  return checked;
}
