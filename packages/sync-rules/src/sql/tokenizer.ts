/** Tokenizer for the SQL subset of sync rules. */

export type TokenKind =
  | 'identifier' // bare word; keywords are identifiers the parser recognises case-insensitively
  | 'quoted_identifier' // "name" or `name`
  | 'string' // 'text'
  | 'integer'
  | 'real'
  | 'operator' // = == != <> < <= > >= -> ->> || + - * / % ( ) , . ; & | ~ << >>
  | 'parameter' // ? ?1 :name @name $name (never supported, reported by the parser)
  | 'eof';

export interface Token {
  kind: TokenKind;
  /** Identifier name, string contents, number text, or the operator. */
  value: string;
  start: number;
  end: number;
}

/** A syntax error at a character range of the query. */
export class SqlSyntaxError extends Error {
  constructor(
    message: string,
    readonly start: number,
    readonly end: number
  ) {
    super(message);
    this.name = 'SqlSyntaxError';
  }
}

const OPERATORS = [
  '->>',
  '->',
  '||',
  '<=',
  '>=',
  '<>',
  '!=',
  '==',
  '<<',
  '>>',
  '=',
  '<',
  '>',
  '+',
  '-',
  '*',
  '/',
  '%',
  '(',
  ')',
  ',',
  '.',
  ';',
  '&',
  '|',
  '~'
];

function isIdentifierStart(char: string): boolean {
  return /[A-Za-z_\u0080-\uffff]/.test(char);
}

function isIdentifierPart(char: string): boolean {
  return /[A-Za-z0-9_$\u0080-\uffff]/.test(char);
}

export function tokenize(sql: string): Token[] {
  const tokens: Token[] = [];
  let index = 0;
  while (index < sql.length) {
    const char = sql[index]!;
    const start = index;
    if (/\s/.test(char)) {
      index++;
    } else if (sql.startsWith('--', index)) {
      const end = sql.indexOf('\n', index);
      index = end < 0 ? sql.length : end + 1;
    } else if (sql.startsWith('/*', index)) {
      const end = sql.indexOf('*/', index + 2);
      if (end < 0) throw new SqlSyntaxError('Unterminated /* comment', start, sql.length);
      index = end + 2;
    } else if (char === "'") {
      let value = '';
      index++;
      for (;;) {
        if (index >= sql.length) throw new SqlSyntaxError('Unterminated string literal', start, sql.length);
        if (sql[index] === "'") {
          if (sql[index + 1] === "'") {
            value += "'";
            index += 2;
            continue;
          }
          index++;
          break;
        }
        value += sql[index];
        index++;
      }
      tokens.push({ kind: 'string', value, start, end: index });
    } else if (char === '"' || char === '`') {
      let value = '';
      index++;
      for (;;) {
        if (index >= sql.length) throw new SqlSyntaxError('Unterminated quoted identifier', start, sql.length);
        if (sql[index] === char) {
          if (sql[index + 1] === char) {
            value += char;
            index += 2;
            continue;
          }
          index++;
          break;
        }
        value += sql[index];
        index++;
      }
      tokens.push({ kind: 'quoted_identifier', value, start, end: index });
    } else if (/[0-9]/.test(char) || (char === '.' && /[0-9]/.test(sql[index + 1] ?? ''))) {
      const hex = /^0[xX][0-9a-fA-F]+/.exec(sql.slice(index));
      const match = hex ?? /^(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?/.exec(sql.slice(index))!;
      index += match[0].length;
      if (index < sql.length && isIdentifierPart(sql[index]!)) {
        throw new SqlSyntaxError(`Invalid number "${sql.slice(start, index + 1)}"`, start, index + 1);
      }
      const isInteger = hex !== null || /^\d+$/.test(match[0]);
      tokens.push({ kind: isInteger ? 'integer' : 'real', value: match[0], start, end: index });
    } else if (isIdentifierStart(char)) {
      while (index < sql.length && isIdentifierPart(sql[index]!)) index++;
      tokens.push({ kind: 'identifier', value: sql.slice(start, index), start, end: index });
    } else if (char === '?' || char === ':' || char === '@' || char === '$') {
      index++;
      while (index < sql.length && isIdentifierPart(sql[index]!)) index++;
      tokens.push({ kind: 'parameter', value: sql.slice(start, index), start, end: index });
    } else {
      const operator = OPERATORS.find((candidate) => sql.startsWith(candidate, index));
      if (!operator) throw new SqlSyntaxError(`Unexpected character ${JSON.stringify(char)}`, start, start + 1);
      index += operator.length;
      tokens.push({ kind: 'operator', value: operator, start, end: index });
    }
  }
  tokens.push({ kind: 'eof', value: '', start: sql.length, end: sql.length });
  return tokens;
}
