// @postmesh/client: the postmesh gRPC API (posts.v1) for Node.js, on @grpc/grpc-js.
//
// The messages and clients are generated from proto/ by ts-proto
// (scripts/gen-clients.sh) and re-exported here; this module adds
// createClients, which connects to one mesh, and badRequestFields, which reads
// the field errors of an INVALID_ARGUMENT.

import {
  type CallOptions,
  type ChannelCredentials,
  type Client,
  type ClientOptions,
  type ClientUnaryCall,
  credentials as grpcCredentials,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";

import { BadRequest } from "./gen/google/rpc/error_details.js";
import { Status } from "./gen/google/rpc/status.js";
import { EventStoreClient, PostCommandClient } from "./gen/posts/v1/command.js";
import { PostQueryClient } from "./gen/posts/v1/query.js";

export * from "./gen/posts/v1/post.js";
export * from "./gen/posts/v1/command.js";
export * from "./gen/posts/v1/query.js";
export { BadRequest, BadRequest_FieldViolation } from "./gen/google/rpc/error_details.js";
export { Status } from "./gen/google/rpc/status.js";
// The grpc-js pieces a caller needs, from the same copy of grpc-js the clients use
// (credentials from another copy would not be recognised).
export {
  type CallOptions,
  type ChannelCredentials,
  type ClientReadableStream,
  type ClientUnaryCall,
  credentials,
  Metadata,
  type ServiceError,
  status,
} from "@grpc/grpc-js";

/** The clients of one mesh: command-svc (writes and the event log) and query-svc (reads). */
export interface PostmeshClients {
  commands: PostCommandClient;
  events: EventStoreClient;
  queries: PostQueryClient;
  /** Closes every channel. */
  close(): void;
}

/** Options of createClients; every field has a default. */
export interface ConnectOptions {
  /** command-svc's address, default localhost:50051. */
  commandAddr?: string;
  /** query-svc's address, default localhost:50052. */
  queryAddr?: string;
  /** Default: plaintext (the servers' local default; see docs/security.md for TLS). */
  credentials?: ChannelCredentials;
  /** grpc-js channel options, e.g. { "grpc.max_receive_message_length": 8 << 20 }. */
  channelOptions?: Partial<ClientOptions>;
}

/** Connects to a mesh (lazily: the channels connect on the first call). */
export function createClients(options: ConnectOptions = {}): PostmeshClients {
  const credentials = options.credentials ?? grpcCredentials.createInsecure();
  const commandAddr = options.commandAddr ?? "localhost:50051";
  const queryAddr = options.queryAddr ?? "localhost:50052";
  const commands = new PostCommandClient(commandAddr, credentials, options.channelOptions);
  const events = new EventStoreClient(commandAddr, credentials, options.channelOptions);
  const queries = new PostQueryClient(queryAddr, credentials, options.channelOptions);
  return {
    commands,
    events,
    queries,
    close() {
      commands.close();
      events.close();
      queries.close();
    },
  };
}

const BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest";

/**
 * The fields named by the google.rpc.BadRequest of a failed call, in order.
 *
 * postmesh answers bad input with INVALID_ARGUMENT and one field violation per
 * bad field in the grpc-status-details-bin trailer; empty when the error
 * carries none.
 */
export function badRequestFields(error: ServiceError): string[] {
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (!(raw instanceof Uint8Array)) return [];
  return Status.decode(raw)
    .details.filter((any) => any.typeUrl === BAD_REQUEST_TYPE)
    .flatMap((any) => BadRequest.decode(any.value).fieldViolations.map((violation) => violation.field));
}

/** Per-call settings of unary(). */
export interface CallSettings {
  /** The call's deadline, from now; none when unset. */
  timeoutMs?: number;
  /** Request metadata (headers), e.g. a traceparent or an authorization token. */
  metadata?: Metadata;
}

/** A generated client method in its (request, metadata, options, callback) form. */
export type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/**
 * Makes a unary call and returns its answer as a promise (grpc-js calls take a
 * callback); rejects with the ServiceError of a failed call.
 *
 *   const created = await unary(clients.commands, clients.commands.createPost, request, { timeoutMs: 5000 });
 */
export function unary<Req, Res>(
  client: Client,
  method: UnaryMethod<Req, Res>,
  request: Req,
  settings: CallSettings = {},
): Promise<Res> {
  const options: Partial<CallOptions> =
    settings.timeoutMs === undefined ? {} : { deadline: new Date(Date.now() + settings.timeoutMs) };
  return new Promise((resolve, reject) => {
    method.call(client, request, settings.metadata ?? new Metadata(), options, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}
