export { startServer, type ServerOptions, type RunningServer } from './server.js';
export type { Store } from './store/types.js';
/** The APM API's wire shapes (`GET /v1/traces`, `GET /v1/traces/:id`), for clients such as the CLI. */
export type { SpanRecord, TraceSummary } from './apm/types.js';
