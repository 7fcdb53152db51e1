export { lastTraceRandomness, newSpanId, newTraceId } from '../balancing/ids.js';
