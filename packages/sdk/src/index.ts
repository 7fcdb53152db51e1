export { createControlPlaneClient, DEFAULT_IDLE_TIMEOUT_MS } from './control-plane-client.js';
export type { ControlPlaneClient, ControlPlaneClientOptions, ControlPlaneEvents, DisconnectReason, ListFilter, SnapshotSource } from './control-plane-client.js';
export { Backoff, DEFAULT_BACKOFF, fullJitterDelay, type BackoffOptions } from './backoff.js';
export { ControlPlaneError, isControlPlaneError } from './errors.js';
export type { CacheContents } from './cache-file.js';
export type { Logger } from './logger.js';
