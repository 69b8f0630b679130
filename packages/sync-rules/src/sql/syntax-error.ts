/** A problem in a query at a character range of its text (0-based offsets, end exclusive). */
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
