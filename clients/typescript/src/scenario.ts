#!/usr/bin/env node
// postmesh-scenario: the interop scenario described in clients/README.md
// against a live mesh, from TypeScript on Node; it exits 1 at the first
// deviation from the contract, 0 when every check passed.
//
//   COMMAND_ADDR=localhost:50051 QUERY_ADDR=localhost:50052 npx postmesh-scenario
//
// It uses the package's public API (./index.js) as any user would.

import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";

import {
  badRequestFields,
  createClients,
  CreatePostRequest,
  type CreatePostResponse,
  DeletePostRequest,
  EventType,
  GetPostRequest,
  ListPostsRequest,
  type ListPostsResponse,
  type Post,
  type PostCommandClient,
  type PostQueryClient,
  UpdatePostRequest,
  WatchPostsRequest,
  unary,
  type WatchPostsResponse,
} from "./index.js";

const LANG = "typescript";
// Longer than any step should take; the deadline checks use their own short ones.
const STEP_TIMEOUT_MS = 10_000;
const STEP = { timeoutMs: STEP_TIMEOUT_MS };
// A request larger than the servers' default MAX_MESSAGE_BYTES (4 MiB).
const TOO_LARGE = 5 * 1024 * 1024;

class Deviation extends Error {}

function expect(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Deviation(message);
}

/** The gRPC spelling of a status code: NOT_FOUND. */
function codeName(code: grpc.status): string {
  return grpc.status[code] ?? `code ${code}`;
}

function isServiceError(error: unknown): error is grpc.ServiceError {
  return error instanceof Error && typeof (error as grpc.ServiceError).code === "number";
}

function deadline(ms: number): Partial<grpc.CallOptions> {
  return { deadline: new Date(Date.now() + ms) };
}

/** Runs call, which must fail with `code`; returns the error. */
async function expectCode(call: Promise<unknown>, code: grpc.status): Promise<grpc.ServiceError> {
  try {
    await call;
  } catch (error) {
    if (!isServiceError(error)) throw error;
    expect(error.code === code, `expected ${codeName(code)}, got ${codeName(error.code)}: ${error.details}`);
    return error;
  }
  throw new Deviation(`expected ${codeName(code)}, but the call succeeded`);
}

/** Resolves with the next message of a stream, or rejects with its error. */
function nextMessage<T>(stream: grpc.ClientReadableStream<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    const onData = (message: T) => {
      cleanup();
      resolve(message);
    };
    const onError = (error: Error) => {
      cleanup();
      reject(error);
    };
    const onEnd = () => {
      cleanup();
      reject(new Deviation("the stream ended without a message"));
    };
    const cleanup = () => {
      stream.off("data", onData);
      stream.off("error", onError);
      stream.off("end", onEnd);
      stream.pause();
    };
    stream.on("data", onData);
    stream.on("error", onError);
    stream.on("end", onEnd);
    stream.resume();
  });
}

/** Resolves with the error that ends a stream (null if it ends cleanly), discarding messages. */
function streamOutcome<T>(stream: grpc.ClientReadableStream<T>): Promise<grpc.ServiceError | null> {
  return new Promise((resolve) => {
    stream.on("data", () => {});
    stream.on("error", (error: grpc.ServiceError) => resolve(error));
    stream.on("end", () => resolve(null));
  });
}

class Scenario {
  passed = 0;
  readonly author = `interop-${LANG}-${randomBytes(4).toString("hex")}`;

  constructor(
    readonly commands: PostCommandClient,
    readonly queries: PostQueryClient,
  ) {}

  async check(name: string, step: () => Promise<void>): Promise<void> {
    const started = Date.now();
    try {
      await step();
    } catch (error) {
      const reason = isServiceError(error)
        ? `unexpected ${codeName(error.code)}: ${error.details}`
        : error instanceof Error
          ? error.message
          : String(error);
      console.log(`FAIL  ${name}: ${reason}`);
      console.log(`${LANG} client: ${this.passed} checks passed, then a deviation`);
      process.exit(1);
    }
    this.passed += 1;
    console.log(`ok    ${name} (${Date.now() - started} ms)`);
  }

  create(title: string): Promise<CreatePostResponse> {
    const request = CreatePostRequest.fromPartial({ title, content: `body of ${title}`, authorName: this.author });
    return unary(this.commands, this.commands.createPost, request, STEP);
  }

  async get(postId: number, minVersion = 0, includeDeleted = false, timeoutMs = STEP_TIMEOUT_MS): Promise<Post> {
    const request = GetPostRequest.fromPartial({ postId, minVersion, includeDeleted });
    const response = await unary(this.queries, this.queries.getPost, request, { timeoutMs });
    expect(response.post !== undefined, "GetPost answered without a post");
    return response.post;
  }

  async run(): Promise<void> {
    let postId = 0;
    let watch: grpc.ClientReadableStream<WatchPostsResponse> | undefined;

    await this.check("create", async () => {
      const created = await this.create("first");
      expect(created.postId > 0 && created.version === 1, `expected id > 0 at version 1, got ${JSON.stringify(created)}`);
      postId = created.postId;
    });

    await this.check("watch subscribes", async () => {
      // Once the read model has the post, the next change to it is the update below.
      await this.get(postId, 1);
      const stream = this.queries.watchPosts(WatchPostsRequest.fromPartial({ postId }), new grpc.Metadata(), deadline(STEP_TIMEOUT_MS));
      stream.pause();
      // The server subscribes before it sends the response headers.
      await new Promise<void>((resolve, reject) => {
        stream.once("metadata", () => resolve());
        stream.once("error", reject);
      });
      watch = stream;
    });

    await this.check("update with expected_version", async () => {
      const request = UpdatePostRequest.fromPartial({ postId, expectedVersion: 1, title: "first, edited" });
      const updated = await unary(this.commands, this.commands.updatePost, request, STEP);
      expect(updated.version === 2, `version after one update is 2, got ${updated.version}`);
    });

    await this.check("stale update is ABORTED", async () => {
      const request = UpdatePostRequest.fromPartial({ postId, expectedVersion: 1, title: "lost update" });
      await expectCode(unary(this.commands, this.commands.updatePost, request, STEP), grpc.status.ABORTED);
    });

    await this.check("GetPost min_version sees the update", async () => {
      const post = await this.get(postId, 2);
      expect(post.version === 2, `expected version 2, got ${post.version}`);
      expect(post.title === "first, edited", `expected the new title, got ${JSON.stringify(post.title)}`);
      expect(post.authorName === this.author, `author ${JSON.stringify(post.authorName)}`);
      expect(post.createdAt instanceof Date && post.updatedAt instanceof Date, "timestamps must be set");
    });

    await this.check("WatchPosts receives the next change", async () => {
      expect(watch !== undefined, "no watch stream");
      let change = await nextMessage(watch);
      // The creation's notification may still have been on its way when the watch began.
      if (change.post?.version === 1 && change.eventType === EventType.EVENT_TYPE_POST_CREATED) {
        change = await nextMessage(watch);
      }
      expect(
        change.post?.postId === postId && change.post.version === 2 && change.eventType === EventType.EVENT_TYPE_POST_UPDATED,
        `expected post ${postId} at version 2 (updated), got ${JSON.stringify(change)}`,
      );
      // Cancelling ends the stream with a CANCELLED error of our own making.
      watch.on("error", () => {});
      watch.cancel();
    });

    await this.check("ListPosts pages with page_token", async () => {
      const second = (await this.create("second")).postId;
      const third = (await this.create("third")).postId;
      for (const id of [second, third]) await this.get(id, 1);
      const seen: number[] = [];
      let token = "";
      let pages = 0;
      for (;;) {
        const request = ListPostsRequest.fromPartial({ authorName: this.author, pageSize: 2, pageToken: token });
        const page: ListPostsResponse = await unary(this.queries, this.queries.listPosts, request, STEP);
        pages += 1;
        expect(page.posts.length <= 2, `page of ${page.posts.length} posts, page_size was 2`);
        seen.push(...page.posts.map((p) => p.postId));
        token = page.nextPageToken;
        if (!token) break;
        expect(pages < 5, "more pages than 3 posts can fill");
      }
      const want = [third, second, postId];
      expect(JSON.stringify(seen) === JSON.stringify(want), `expected ${want} newest first, got ${seen}`);
      expect(pages >= 2, `3 posts with page_size 2 need 2 pages, got ${pages}`);
    });

    await this.check("bad input is INVALID_ARGUMENT naming the field", async () => {
      const request = CreatePostRequest.fromPartial({ title: "", content: "body", authorName: this.author });
      const error = await expectCode(unary(this.commands, this.commands.createPost, request, STEP), grpc.status.INVALID_ARGUMENT);
      const fields = badRequestFields(error);
      expect(JSON.stringify(fields) === '["title"]', `expected a BadRequest violation for 'title', got ${JSON.stringify(fields)}`);
    });

    await this.check("deadline bounds a min_version wait", async () => {
      const started = Date.now();
      let error: unknown = null;
      try {
        await this.get(postId, 1_000_000, false, 300);
      } catch (e) {
        error = e;
      }
      const took = Date.now() - started;
      // The server answers UNAVAILABLE just before the deadline, naming the versions;
      // if that reply loses the race, the client's own DEADLINE_EXCEEDED wins.
      expect(
        isServiceError(error) && [grpc.status.DEADLINE_EXCEEDED, grpc.status.UNAVAILABLE].includes(error.code),
        `expected DEADLINE_EXCEEDED or UNAVAILABLE, got ${isServiceError(error) ? codeName(error.code) : String(error)}`,
      );
      expect(took >= 150 && took <= 800, `a 300 ms deadline ended the call after ${took} ms`);
    });

    await this.check("deadline cancels a quiet WatchPosts", async () => {
      const started = Date.now();
      const stream = this.queries.watchPosts(WatchPostsRequest.fromPartial({ postId }), new grpc.Metadata(), deadline(300));
      const error = await streamOutcome(stream);
      const took = Date.now() - started;
      expect(error !== null, "a watch with a 300 ms deadline ended without an error");
      expect(error.code === grpc.status.DEADLINE_EXCEEDED, `expected DEADLINE_EXCEEDED, got ${codeName(error.code)}`);
      expect(took >= 250 && took <= 1000, `a 300 ms deadline ended the watch after ${took} ms`);
    });

    await this.check("message over the limit is RESOURCE_EXHAUSTED", async () => {
      const request = CreatePostRequest.fromPartial({ title: "huge", content: "x".repeat(TOO_LARGE), authorName: this.author });
      await expectCode(unary(this.commands, this.commands.createPost, request, STEP), grpc.status.RESOURCE_EXHAUSTED);
    });

    await this.check("delete", async () => {
      const request = DeletePostRequest.fromPartial({ postId, expectedVersion: 2 });
      const deleted = await unary(this.commands, this.commands.deletePost, request, STEP);
      expect(deleted.version === 3, `version after the delete is 3, got ${deleted.version}`);
    });

    await this.check("GetPost after delete is NOT_FOUND", async () => {
      // min_version 3 waits for the read model to apply the delete.
      await expectCode(this.get(postId, 3), grpc.status.NOT_FOUND);
      const post = await this.get(postId, 0, true);
      expect(post.deleted && post.version === 3, `include_deleted shows version ${post.version}, deleted=${post.deleted}`);
    });
  }
}

async function main(): Promise<void> {
  const commandAddr = process.env.COMMAND_ADDR || "localhost:50051";
  const queryAddr = process.env.QUERY_ADDR || "localhost:50052";
  console.log(`${LANG} client: command-svc ${commandAddr}, query-svc ${queryAddr}`);
  const clients = createClients({ commandAddr, queryAddr });
  const scenario = new Scenario(clients.commands, clients.queries);
  await scenario.run();
  clients.close();
  console.log(`${LANG} client: all ${scenario.passed} checks passed`);
}

main().catch((error) => {
  console.log(`FAIL  unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  process.exit(1);
});
