// The same package from CommonJS (require): its types and its exports resolve.
import postmesh = require("@postmesh/client");

const request: postmesh.GetPostRequest = postmesh.GetPostRequest.fromPartial({ postId: 1 });
const clients = postmesh.createClients({});
console.log(`CommonJS: createClients, ${typeof clients.queries.getPost} getPost, GetPostRequest ${request.postId}`);
clients.close();
