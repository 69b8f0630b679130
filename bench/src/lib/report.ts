/** One line of a benchmark's table: a figure, and optionally the target it is held against. */
export interface ReportRow {
  label: string;
  value: number;
  unit: string;
  /** Decimals to print (default 0 for values ≥ 100, else 2). */
  digits?: number;
  target?: Target;
  /** Free text printed at the end (e.g. the reference figure). */
  note?: string;
}

export interface Target {
  comparison: '>=' | '<=';
  value: number;
  unit?: string;
}

export type Verdict = 'PASS' | 'MISS' | '';

export function verdict(row: ReportRow): Verdict {
  if (!row.target) return '';
  if (!Number.isFinite(row.value)) return 'MISS';
  return row.target.comparison === '>='
    ? row.value >= row.target.value
      ? 'PASS'
      : 'MISS'
    : row.value <= row.target.value
      ? 'PASS'
      : 'MISS';
}

export function formatNumber(value: number, digits?: number): string {
  if (!Number.isFinite(value)) return String(value);
  const places = digits ?? (Math.abs(value) >= 100 ? 0 : 2);
  return value.toLocaleString('en-US', { minimumFractionDigits: places, maximumFractionDigits: places });
}

function formatTarget(target: Target | undefined, unit: string): string {
  if (!target) return '';
  return `target ${target.comparison === '>=' ? '≥' : '≤'} ${formatNumber(target.value, Number.isInteger(target.value) ? 0 : undefined)} ${target.unit ?? unit}`;
}

/** The rows as an aligned table: label, value + unit, target, PASS/MISS, note. */
export function formatTable(rows: ReportRow[]): string {
  const cells = rows.map((row) => [
    row.label,
    `${formatNumber(row.value, row.digits)} ${row.unit}`,
    formatTarget(row.target, row.unit),
    verdict(row),
    row.note ?? ''
  ]);
  const widths = [0, 1, 2, 3].map((column) => Math.max(...cells.map((line) => line[column]!.length)));
  return cells
    .map((line) =>
      [
        line[0]!.padEnd(widths[0]!),
        line[1]!.padStart(widths[1]!),
        line[2]!.padEnd(widths[2]!),
        line[3]!.padEnd(widths[3]!),
        line[4]!
      ]
        .join('   ')
        .trimEnd()
    )
    .join('\n');
}
