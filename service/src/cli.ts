#!/usr/bin/env node
// The entry: decide about the heap limit before the service's modules load, so a supervising parent stays small.
import { superviseWithHeapLimit } from './cli-heap-limit.js';

const argv = process.argv.slice(2);
await superviseWithHeapLimit(argv);
const { main } = await import('./cli-program.js');
process.exitCode = await main(argv);
