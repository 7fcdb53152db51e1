export { startServer, type ServerOptions, type RunningServer } from './server.js';
export type { Store } from './store/types.js';
/** The APM API's wire shapes (traces, RED figures, topology, SLO status, alerts, contention), for clients such as the CLI. */
export type { AlertEvent, RedRow, SpanRecord, Topology, TraceSummary } from './apm/types.js';
export type { SloStatus } from './apm/alerting/routes.js';
export type { ContentionReport } from './apm/alerting/contention.js';
