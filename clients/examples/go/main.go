// Command hello creates a post, then reads its own write: the smallest
// program on the postmesh Go module, from a module of its own.
//
//	go run .        # COMMAND_ADDR / QUERY_ADDR to move it
//
// Its go.mod points the module at this checkout with a replace; a user once
// the repository is public runs `go get github.com/postmesh/postmesh/clients/go`
// instead. CI builds and runs it (scripts/interop.sh).
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	postsv1 "github.com/postmesh/postmesh/clients/go/posts/v1"
)

func addr(env, fallback string) string {
	if value := os.Getenv(env); value != "" {
		return value
	}
	return fallback
}

func dial(target string) *grpc.ClientConn {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatalf("connect to %s: %v", target, err)
	}
	return conn
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	commandConn := dial(addr("COMMAND_ADDR", "localhost:50051"))
	defer commandConn.Close()
	queryConn := dial(addr("QUERY_ADDR", "localhost:50052"))
	defer queryConn.Close()

	created, err := postsv1.NewPostCommandClient(commandConn).CreatePost(ctx, &postsv1.CreatePostRequest{
		Title: "Hello", Content: "from Go", AuthorName: "hello-go",
	})
	if err != nil {
		log.Fatalf("CreatePost: %v", err)
	}
	// MinVersion: wait until the read model has the write (read your write).
	got, err := postsv1.NewPostQueryClient(queryConn).GetPost(ctx, &postsv1.GetPostRequest{
		PostId: created.GetPostId(), MinVersion: created.GetVersion(),
	})
	if err != nil {
		log.Fatalf("GetPost: %v", err)
	}
	post := got.GetPost()
	fmt.Printf("post %d at version %d: %q by %s\n", post.GetPostId(), post.GetVersion(), post.GetTitle(), post.GetAuthorName())
}
