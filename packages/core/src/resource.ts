export const API_VERSION = 'plinth.dev/v1';
export const SYSTEM_NAMESPACE = 'plinth-system';

export interface ResourceMetadata {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** Global store revision of this version of the resource. */
  revision: number;
  /** Revision at which this resource was (last) created. */
  createRevision: number;
  createdAt: string;
  updatedAt: string;
}

export interface Resource<S = Record<string, unknown>> {
  apiVersion: string;
  kind: string;
  metadata: ResourceMetadata;
  spec: S;
}

/** What a client sends: the server fills in revision and timestamps. */
export interface ResourceInput<S = unknown> {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    namespace?: string;
    name?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    revision?: number;
  };
  spec?: S;
}

export type ChangeType = 'ADDED' | 'MODIFIED' | 'DELETED';

/** One change in the global log. For DELETED the resource is its last state, with the delete's revision. */
export interface WatchEvent {
  type: ChangeType;
  revision: number;
  resource: Resource;
}

export interface ResourceKey {
  kind: string;
  namespace: string;
  name: string;
}

export function keyOf(r: { kind: string; metadata: { namespace: string; name: string } }): string {
  return `${r.kind}/${r.metadata.namespace}/${r.metadata.name}`;
}
