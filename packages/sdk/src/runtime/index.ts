export { createService, SERVICE_KINDS } from './service.js';
export type { ControlPlaneConnection, ListenOptions, Listening, Service, ServiceEvent, ServiceOptions } from './service.js';
export { HEALTH_PATH, READY_PATH, type NotReadyReason, type UpgradeListener } from './drainable-server.js';
export { ALREADY_LISTENING, SERVICE_STOPPED, ServiceError } from './errors.js';
export type { RegistrationState } from './registration.js';
export { listenOn, type ListenTarget } from './listen.js';
