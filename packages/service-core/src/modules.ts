import type { z } from 'zod';
import type { Logger } from './logger.js';
import type { BucketStorage } from './storage/bucket-storage.js';
import type { ReplicationSource } from './source/replication-source.js';

/**
 * What every module-owned config section is before its module parsed it (a `type` and anything else); a module's
 * own config type narrows it, and the registry holds modules under this shape.
 */
export type ModuleConfigSection = { type: string } & Record<string, unknown>;

export interface ModuleContext {
  logger: Logger;
  /** Directory of the config file, for resolving relative paths (certificates, sync config). */
  configDir: string;
}

/**
 * A storage module owns the `storage:` config section whose `type` equals its own: it validates that
 * section with its schema and builds the storage from it. service-core never sees driver-specific keys.
 */
export interface StorageModule<Config extends ModuleConfigSection = ModuleConfigSection> {
  type: string;
  configSchema: z.ZodType<Config>;
  createStorage(config: Config, context: ModuleContext): Promise<BucketStorage>;
}

/** Replication of one source into storage: started once per replication process, stopped on shutdown. */
export interface Replicator {
  start(): void;
  stop(): Promise<void>;
}

/** Progress of copying one table in the initial snapshot. */
export interface SnapshotTableProgress {
  /** `schema.table`. */
  table: string;
  rowsDone: number;
  estimatedTotal: number;
  rowsPerSecond: number;
  etaSeconds: number | null;
}

export interface ReplicatorContext extends ModuleContext {
  storage: BucketStorage;
  /** Called whenever replication makes progress or is idle but healthy (liveness probe). */
  onAlive?: () => void;
  /**
   * Initial snapshot progress, after each chunk. Without it the progress is logged at info level; with it, at debug
   * (the receiver shows it, e.g. as an updating line on a terminal).
   */
  onSnapshotProgress?: (progress: SnapshotTableProgress) => void;
}

/** A source module owns `replication.connections[]` entries whose `type` equals its own. */
export interface SourceModule<Config extends ModuleConfigSection = ModuleConfigSection> {
  type: string;
  configSchema: z.ZodType<Config>;
  /** Head reads and markers for checkpoint requests (API processes). */
  createSource(config: Config, context: ModuleContext): Promise<ReplicationSource>;
  /** The replication job (replication processes). */
  createReplicator(config: Config, context: ReplicatorContext): Replicator;
  /** Source preconditions for these sync rules (`syncpoint validate`): one line per problem, empty when fine. */
  checkSource(config: Config, syncConfigContent: string): Promise<string[]>;
}

/** Maps config `type` values to the modules that own them. */
export class ModuleRegistry {
  readonly storage = new Map<string, StorageModule>();
  readonly sources = new Map<string, SourceModule>();

  registerStorage(module: StorageModule): this {
    this.storage.set(module.type, module);
    return this;
  }

  registerSource(module: SourceModule): this {
    this.sources.set(module.type, module);
    return this;
  }
}
