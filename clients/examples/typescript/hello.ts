// Create a post, then read your own write: the smallest program on @postmesh/client.
//
//   npm install @postmesh/client   (from this checkout: npm pack clients/typescript, then install the .tgz)
//   npx tsc -p . && node out/hello.js      # COMMAND_ADDR / QUERY_ADDR to move it

import { createClients, CreatePostRequest, GetPostRequest, unary } from "@postmesh/client";

const { commands, queries, close } = createClients({
  commandAddr: process.env.COMMAND_ADDR || "localhost:50051",
  queryAddr: process.env.QUERY_ADDR || "localhost:50052",
});
try {
  const created = await unary(
    commands,
    commands.createPost,
    CreatePostRequest.fromPartial({ title: "Hello", content: "from TypeScript", authorName: "hello-typescript" }),
    { timeoutMs: 10_000 },
  );
  // minVersion: wait until the read model has the write (read your write).
  const { post } = await unary(
    queries,
    queries.getPost,
    GetPostRequest.fromPartial({ postId: created.postId, minVersion: created.version }),
    { timeoutMs: 10_000 },
  );
  console.log(`post ${post?.postId} at version ${post?.version}: ${JSON.stringify(post?.title)} by ${post?.authorName}`);
} finally {
  close();
}
