/**
 * `datetime()` and `unixepoch()` with SQLite's time values and modifiers (https://sqlite.org/lang_datefunc.html).
 *
 * A time is held as SQLite holds it: milliseconds since the Julian day epoch (`iJD`). Calendar
 * conversions use the proleptic Gregorian calendar, as SQLite does. Anything SQLite would not accept
 * gives NULL, never an error.
 *
 * Supported time values: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS[.fff]]` (also with `T`), `HH:MM[:SS[.fff]]`,
 * an optional `Z` or `±HH:MM` zone after a time, `now`, and numbers (Julian day, or Unix seconds with
 * the `unixepoch`/`auto` modifier). Modifiers: `unixepoch`, `auto`, `subsec`/`subsecond`,
 * `±N days|hours|minutes|seconds|months|years` (singular too, N may have a fraction),
 * `start of day|month|year`, `weekday N`. Other SQLite modifiers (`localtime`, `utc`, `ceiling`,
 * `floor`, `julianday`, `±HH:MM` offsets) give NULL: they either depend on the server's time zone
 * or are not used in sync rules.
 */
import { castToText, type SqliteValue } from '../sqlite-value.js';
import type { FunctionDefinition } from './types.js';

const MS_PER_DAY = 86_400_000;
/** Julian day number of 1970-01-01 00:00 UTC, in milliseconds. */
const UNIX_EPOCH_JD_MS = 210_866_760_000_000;
/** SQLite's valid range: Julian day 0 (4714 BC) up to 9999-12-31 23:59:59.999. */
const MAX_JD_MS = 464_269_060_799_999;

interface Time {
  /** Milliseconds since the Julian day epoch. */
  jd: number;
  /** The time value was a bare number (so `unixepoch`/`auto` may reinterpret it). */
  rawNumber?: number;
  subsec: boolean;
  /**
   * The time is held as calendar fields (parsed text, `start of …`, month/year offsets) rather than
   * as a Julian day number: SQLite then reads the fields without checking the day number's range.
   */
  calendar?: boolean;
}

const validJd = (jd: number): boolean => Number.isFinite(jd) && jd >= 0 && jd <= MAX_JD_MS;

/** Milliseconds since the Julian day epoch of a proleptic Gregorian date and time (fields may overflow). */
function toJd(year: number, month: number, day: number, ms = 0): number {
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(0, 0, 0, 0);
  return date.getTime() + UNIX_EPOCH_JD_MS + ms;
}

function fields(jd: number) {
  const date = new Date(jd - UNIX_EPOCH_JD_MS);
  return {
    year: date.getUTCFullYear(),
    month: date.getUTCMonth() + 1,
    day: date.getUTCDate(),
    msOfDay: (((jd - UNIX_EPOCH_JD_MS) % MS_PER_DAY) + MS_PER_DAY) % MS_PER_DAY,
    weekday: date.getUTCDay()
  };
}

// SQLite's digit fields: year 4 digits (optionally negative), month 1–12, day 1–31, hour 0–24,
// minute and second 0–59, zone hours 0–14.
const TIME_OF_DAY = String.raw`(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?`;
const ZONE = String.raw`\s*(?:([zZ])|([+-])(\d{2}):(\d{2}))?`;
const DATE_TIME = new RegExp(String.raw`^(-?)(\d{4})-(\d{2})-(\d{2})(?:[\sT]+${TIME_OF_DAY}${ZONE})?\s*$`);
const TIME_ONLY = new RegExp(String.raw`^${TIME_OF_DAY}${ZONE}\s*$`);
const NUMBER = /^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$/;

function timeOfDayMs(groups: Array<string | undefined>): number | undefined {
  const [hour, minute, second, fraction, zulu, zoneSign, zoneHour, zoneMinute] = groups;
  const h = Number(hour);
  const m = Number(minute);
  const s = second === undefined ? 0 : Number(second);
  if (h > 24 || m > 59 || s > 59) return undefined;
  let ms = h * 3_600_000 + m * 60_000 + Math.round((s + (fraction ? Number(`0${fraction}`) : 0)) * 1000);
  if (zulu === undefined && zoneSign !== undefined) {
    const zh = Number(zoneHour);
    const zm = Number(zoneMinute);
    if (zh > 14 || zm > 59) return undefined;
    // A local time at +HH:MM is that much ahead of UTC.
    ms -= (zoneSign === '-' ? -1 : 1) * (zh * 60 + zm) * 60_000;
  }
  return ms;
}

function parseTimeValue(value: SqliteValue, now: () => number): Time | undefined {
  if (value === null) return undefined;
  // A blob is read as the text it holds, as SQLite does.
  if (typeof value === 'bigint' || typeof value === 'number') return numericTime(Number(value));
  const text = castToText(value)!;
  if (text.trim().toLowerCase() === 'now') return { jd: now() + UNIX_EPOCH_JD_MS, subsec: false };
  if (NUMBER.test(text)) return numericTime(Number(text.trim()));
  const dateTime = DATE_TIME.exec(text);
  if (dateTime) {
    const [, negative, year, month, day, ...time] = dateTime;
    const m = Number(month);
    const d = Number(day);
    if (m < 1 || m > 12 || d < 1 || d > 31) return undefined;
    const ms = time[0] === undefined ? 0 : timeOfDayMs(time);
    if (ms === undefined) return undefined;
    return { jd: toJd(Number(year) * (negative ? -1 : 1), m, d, ms), subsec: false, calendar: true };
  }
  const timeOnly = TIME_ONLY.exec(text);
  if (timeOnly) {
    const ms = timeOfDayMs(timeOnly.slice(1));
    return ms === undefined ? undefined : { jd: toJd(2000, 1, 1, ms), subsec: false, calendar: true };
  }
  return undefined;
}

function numericTime(number: number): Time {
  // As SQLite: a number is a Julian day unless a later `unixepoch`/`auto` says otherwise.
  const jd = number >= 0 && number < 5_373_484.5 ? Math.trunc(number * MS_PER_DAY + 0.5) : NaN;
  return { jd, rawNumber: number, subsec: false };
}

// Units of `±N <unit>`: milliseconds per unit and SQLite's limit on N.
const UNITS: Record<string, { ms: number; limit: number }> = {
  second: { ms: 1000, limit: 4.6427e14 },
  minute: { ms: 60_000, limit: 7.7379e12 },
  hour: { ms: 3_600_000, limit: 1.2897e11 },
  day: { ms: MS_PER_DAY, limit: 5_373_485 },
  month: { ms: 30 * MS_PER_DAY, limit: 176_546 },
  year: { ms: 365 * MS_PER_DAY, limit: 14_713 }
};
// No space is allowed before the number or after the unit; at least one between them.
const OFFSET = /^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s+([a-z]+?)s?$/;

/** Applies one modifier; undefined when SQLite would give NULL. `index` is the modifier's position (0 = first). */
function applyModifier(time: Time, modifier: string, index: number): Time | undefined {
  const text = modifier.toLowerCase();
  switch (text) {
    case 'unixepoch': {
      if (index > 0 || time.rawNumber === undefined) return undefined;
      const jd = Math.trunc(time.rawNumber * 1000 + UNIX_EPOCH_JD_MS + 0.5);
      if (!(time.rawNumber * 1000 + UNIX_EPOCH_JD_MS >= 0 && time.rawNumber * 1000 + UNIX_EPOCH_JD_MS < MAX_JD_MS + 1))
        return undefined;
      return { jd, subsec: time.subsec };
    }
    case 'auto': {
      if (index > 0) return undefined;
      // On a time that was not a bare number, 'auto' changes nothing.
      if (time.rawNumber === undefined) return time;
      const seconds = time.rawNumber;
      // SQLite: a number from 0 to 5373484.499999 stays a Julian day; other numbers in the Unix-time
      // range of 0000-01-01 … 9999-12-31 are Unix seconds.
      if (seconds >= 0 && seconds < 5_373_484.5) return { ...time, rawNumber: undefined };
      if (seconds >= -210_866_760_000 && seconds <= 253_402_300_799) {
        return { jd: Math.trunc(seconds * 1000 + UNIX_EPOCH_JD_MS + 0.5), subsec: time.subsec };
      }
      return { ...time, rawNumber: undefined };
    }
    case 'subsec':
    case 'subsecond':
      return { ...time, subsec: true };
    case 'start of day':
    case 'start of month':
    case 'start of year': {
      // Calendar fields come from a day number only if it is in range (SQLite's computeYMD).
      if (!time.calendar && !validJd(time.jd)) return undefined;
      const { year, month, day } = fields(time.jd);
      const unit = text.slice('start of '.length);
      const jd = toJd(year, unit === 'year' ? 1 : month, unit === 'day' ? day : 1);
      return { jd, subsec: time.subsec, calendar: true };
    }
  }
  const weekday = /^weekday\s+(\d+(?:\.0*)?)$/.exec(text);
  if (weekday) {
    const target = Number(weekday[1]);
    if (!Number.isInteger(target) || target > 6 || (!time.calendar && !validJd(time.jd))) return undefined;
    const ahead = (target - fields(time.jd).weekday + 7) % 7;
    return { jd: time.jd + ahead * MS_PER_DAY, subsec: time.subsec };
  }
  const offset = OFFSET.exec(text);
  if (offset) {
    const amount = Number(offset[1]);
    const unit = UNITS[offset[2]!];
    // The time may leave the valid range in between ('-3 hours' on Julian day 0); only the end result is checked.
    if (!unit || !(amount > -unit.limit && amount < unit.limit) || !Number.isFinite(time.jd)) return undefined;
    const rounder = amount < 0 ? -0.5 : 0.5;
    let jd = time.jd;
    let rest = amount;
    if (offset[2] === 'month' || offset[2] === 'year') {
      if (!time.calendar && !validJd(jd)) return undefined;
      // Whole months/years move the calendar fields (the day may overflow into the next month, as
      // SQLite does: 2023-01-31 +1 month is 2023-03-03); a fraction is added as 30 or 365 days.
      const whole = Math.trunc(amount);
      const { year, month, day, msOfDay } = fields(jd);
      jd = offset[2] === 'month' ? toJd(year, month + whole, day, msOfDay) : toJd(year + whole, month, day, msOfDay);
      rest = amount - whole;
    }
    return { jd: jd + Math.trunc(rest * unit.ms + rounder), subsec: time.subsec };
  }
  return undefined;
}

/** Evaluates a time value and its modifiers as SQLite's date functions do; undefined → NULL. */
function evaluateTime(args: readonly SqliteValue[], now: () => number): Time | undefined {
  let time = parseTimeValue(args[0] ?? null, now);
  if (!time) return undefined;
  for (let index = 1; index < args.length; index++) {
    const modifier = args[index]!;
    if (modifier === null) return undefined;
    time = applyModifier(time, castToText(modifier)!, index - 1);
    if (!time) return undefined;
  }
  return validJd(time.jd) ? time : undefined;
}

const pad = (value: number, width: number): string => String(value).padStart(width, '0');

function formatDateTime(time: Time): string {
  const { year, month, day, msOfDay } = fields(time.jd);
  const yearText = year < 0 ? `-${pad(-year, 4)}` : pad(year, 4);
  const hours = Math.floor(msOfDay / 3_600_000);
  const minutes = Math.floor(msOfDay / 60_000) % 60;
  const seconds = Math.floor(msOfDay / 1000) % 60;
  const base = `${yearText}-${pad(month, 2)}-${pad(day, 2)} ${pad(hours, 2)}:${pad(minutes, 2)}:${pad(seconds, 2)}`;
  return time.subsec ? `${base}.${pad(msOfDay % 1000, 3)}` : base;
}

/** The clock used for `'now'`; replaceable in tests. */
export const clock = { now: (): number => Date.now() };

export const DATETIME_FUNCTIONS: Record<string, FunctionDefinition> = {
  datetime: {
    minArgs: 1,
    maxArgs: Infinity,
    call: (args) => {
      const time = evaluateTime(args, clock.now);
      return time ? formatDateTime(time) : null;
    }
  },
  unixepoch: {
    minArgs: 1,
    maxArgs: Infinity,
    call: (args) => {
      const time = evaluateTime(args, clock.now);
      if (!time) return null;
      const unixMs = time.jd - UNIX_EPOCH_JD_MS;
      // time.jd ≥ 0, so SQLite's truncating division of iJD is a floor here.
      return time.subsec ? unixMs / 1000 : BigInt(Math.floor(time.jd / 1000) - UNIX_EPOCH_JD_MS / 1000);
    }
  }
};
