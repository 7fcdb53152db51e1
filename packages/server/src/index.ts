export { startServer, type ServerOptions, type RunningServer } from './server.js';
export type { Store } from './store/types.js';
