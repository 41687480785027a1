// Command postmesh-scenario runs the interop scenario described in
// clients/README.md against a live mesh, from Go: it exits 1 at the first
// deviation from the contract, 0 when every check passed.
//
//	go install github.com/postmesh/postmesh/clients/go/cmd/postmesh-scenario@latest
//	COMMAND_ADDR=localhost:50051 QUERY_ADDR=localhost:50052 postmesh-scenario
//
// It uses the module's generated package (posts/v1, imported as postsv1) as
// any user would; google.rpc.BadRequest comes from genproto's errdetails.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	postsv1 "github.com/postmesh/postmesh/clients/go/posts/v1"
)

const (
	lang = "go"
	// Longer than any step should take; the deadline checks use their own short ones.
	stepTimeout = 10 * time.Second
	// A request larger than the servers' default MAX_MESSAGE_BYTES (4 MiB).
	tooLarge = 5 * 1024 * 1024
)

type scenario struct {
	commands postsv1.PostCommandClient
	queries  postsv1.PostQueryClient
	author   string
	passed   int
}

// check runs one step; at the first deviation it reports and exits 1.
func (s *scenario) check(name string, step func(ctx context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	started := time.Now()
	if err := step(ctx); err != nil {
		if st, ok := status.FromError(err); ok && st.Code() != codes.OK {
			err = fmt.Errorf("unexpected %s: %s", codeName(st.Code()), st.Message())
		}
		fmt.Printf("FAIL  %s: %v\n", name, err)
		fmt.Printf("%s client: %d checks passed, then a deviation\n", lang, s.passed)
		os.Exit(1)
	}
	s.passed++
	fmt.Printf("ok    %s (%d ms)\n", name, time.Since(started).Milliseconds())
}

// codeName spells a code the way the gRPC spec (and the other clients) do: NOT_FOUND.
func codeName(code codes.Code) string {
	var out []rune
	for i, r := range code.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			out = append(out, '_')
		}
		out = append(out, r)
	}
	return strings.ToUpper(string(out))
}

// expectCode checks that err is a gRPC status with the given code.
func expectCode(err error, want codes.Code) (*status.Status, error) {
	if err == nil {
		return nil, fmt.Errorf("expected %s, but the call succeeded", codeName(want))
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil, fmt.Errorf("expected %s, got a non-gRPC error: %v", codeName(want), err)
	}
	if st.Code() != want {
		return nil, fmt.Errorf("expected %s, got %s: %s", codeName(want), codeName(st.Code()), st.Message())
	}
	return st, nil
}

func (s *scenario) create(ctx context.Context, title string) (*postsv1.CreatePostResponse, error) {
	return s.commands.CreatePost(ctx, &postsv1.CreatePostRequest{
		Title: title, Content: "body of " + title, AuthorName: s.author,
	})
}

func (s *scenario) run() {
	var postID int64
	var watch grpc.ServerStreamingClient[postsv1.WatchPostsResponse]
	watchCtx, stopWatch := context.WithTimeout(context.Background(), stepTimeout)
	defer stopWatch()

	s.check("create", func(ctx context.Context) error {
		created, err := s.create(ctx, "first")
		if err != nil {
			return err
		}
		if created.PostId <= 0 || created.Version != 1 {
			return fmt.Errorf("expected a post id > 0 at version 1, got %d at %d", created.PostId, created.Version)
		}
		postID = created.PostId
		return nil
	})

	s.check("watch subscribes", func(ctx context.Context) error {
		// Once the read model has the post, the next change to it is the update below.
		if _, err := s.queries.GetPost(ctx, &postsv1.GetPostRequest{PostId: postID, MinVersion: 1}); err != nil {
			return err
		}
		var err error
		watch, err = s.queries.WatchPosts(watchCtx, &postsv1.WatchPostsRequest{PostId: &postID})
		if err != nil {
			return err
		}
		// The server subscribes before it sends the response headers.
		_, err = watch.Header()
		return err
	})

	s.check("update with expected_version", func(ctx context.Context) error {
		title := "first, edited"
		updated, err := s.commands.UpdatePost(ctx, &postsv1.UpdatePostRequest{PostId: postID, ExpectedVersion: 1, Title: &title})
		if err != nil {
			return err
		}
		if updated.Version != 2 {
			return fmt.Errorf("version after one update is 2, got %d", updated.Version)
		}
		return nil
	})

	s.check("stale update is ABORTED", func(ctx context.Context) error {
		title := "lost update"
		_, err := s.commands.UpdatePost(ctx, &postsv1.UpdatePostRequest{PostId: postID, ExpectedVersion: 1, Title: &title})
		_, err = expectCode(err, codes.Aborted)
		return err
	})

	s.check("GetPost min_version sees the update", func(ctx context.Context) error {
		got, err := s.queries.GetPost(ctx, &postsv1.GetPostRequest{PostId: postID, MinVersion: 2})
		if err != nil {
			return err
		}
		post := got.GetPost()
		switch {
		case post.GetVersion() != 2:
			return fmt.Errorf("expected version 2, got %d", post.GetVersion())
		case post.GetTitle() != "first, edited":
			return fmt.Errorf("expected the new title, got %q", post.GetTitle())
		case post.GetAuthorName() != s.author:
			return fmt.Errorf("author %q", post.GetAuthorName())
		case post.GetCreatedAt().GetSeconds() <= 0 || post.GetUpdatedAt().GetSeconds() <= 0:
			return errors.New("timestamps must be set")
		}
		return nil
	})

	s.check("WatchPosts receives the next change", func(context.Context) error {
		change, err := watch.Recv()
		// The creation's notification may still have been on its way when the watch began.
		if err == nil && change.GetPost().GetVersion() == 1 && change.GetEventType() == postsv1.EventType_EVENT_TYPE_POST_CREATED {
			change, err = watch.Recv()
		}
		if err != nil {
			return err
		}
		if change.GetPost().GetPostId() != postID || change.GetPost().GetVersion() != 2 ||
			change.GetEventType() != postsv1.EventType_EVENT_TYPE_POST_UPDATED {
			return fmt.Errorf("expected post %d at version 2 (updated), got %v", postID, change)
		}
		stopWatch()
		return nil
	})

	s.check("ListPosts pages with page_token", func(ctx context.Context) error {
		var ids []int64
		for _, title := range []string{"second", "third"} {
			created, err := s.create(ctx, title)
			if err != nil {
				return err
			}
			if _, err := s.queries.GetPost(ctx, &postsv1.GetPostRequest{PostId: created.PostId, MinVersion: 1}); err != nil {
				return err
			}
			ids = append([]int64{created.PostId}, ids...)
		}
		want := append(ids, postID)
		var seen []int64
		token, pages := "", 0
		for {
			page, err := s.queries.ListPosts(ctx, &postsv1.ListPostsRequest{AuthorName: s.author, PageSize: 2, PageToken: token})
			if err != nil {
				return err
			}
			pages++
			if len(page.Posts) > 2 {
				return fmt.Errorf("page of %d posts, page_size was 2", len(page.Posts))
			}
			for _, p := range page.Posts {
				seen = append(seen, p.PostId)
			}
			if token = page.NextPageToken; token == "" {
				break
			}
			if pages >= 5 {
				return errors.New("more pages than 3 posts can fill")
			}
		}
		if !slices.Equal(seen, want) {
			return fmt.Errorf("expected %v newest first, got %v", want, seen)
		}
		if pages < 2 {
			return fmt.Errorf("3 posts with page_size 2 need 2 pages, got %d", pages)
		}
		return nil
	})

	s.check("bad input is INVALID_ARGUMENT naming the field", func(ctx context.Context) error {
		_, err := s.commands.CreatePost(ctx, &postsv1.CreatePostRequest{Title: "", Content: "body", AuthorName: s.author})
		st, err := expectCode(err, codes.InvalidArgument)
		if err != nil {
			return err
		}
		var fields []string
		for _, detail := range st.Details() {
			if bad, ok := detail.(*errdetails.BadRequest); ok {
				for _, v := range bad.GetFieldViolations() {
					fields = append(fields, v.GetField())
				}
			}
		}
		if !slices.Equal(fields, []string{"title"}) {
			return fmt.Errorf("expected a BadRequest violation for 'title', got %v", fields)
		}
		return nil
	})

	s.check("deadline bounds a min_version wait", func(context.Context) error {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		started := time.Now()
		_, err := s.queries.GetPost(ctx, &postsv1.GetPostRequest{PostId: postID, MinVersion: 1_000_000})
		took := time.Since(started)
		// The server answers UNAVAILABLE just before the deadline, naming the versions;
		// if that reply loses the race, the client's own DEADLINE_EXCEEDED wins.
		code := status.Code(err)
		if err == nil || (code != codes.DeadlineExceeded && code != codes.Unavailable) {
			return fmt.Errorf("expected DEADLINE_EXCEEDED or UNAVAILABLE, got %v", err)
		}
		if took < 150*time.Millisecond || took > 800*time.Millisecond {
			return fmt.Errorf("a 300 ms deadline ended the call after %d ms", took.Milliseconds())
		}
		return nil
	})

	s.check("deadline cancels a quiet WatchPosts", func(context.Context) error {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		started := time.Now()
		stream, err := s.queries.WatchPosts(ctx, &postsv1.WatchPostsRequest{PostId: &postID})
		for err == nil {
			_, err = stream.Recv()
		}
		took := time.Since(started)
		if errors.Is(err, io.EOF) {
			return errors.New("a watch with a 300 ms deadline ended without an error")
		}
		if _, err := expectCode(err, codes.DeadlineExceeded); err != nil {
			return err
		}
		if took < 250*time.Millisecond || took > time.Second {
			return fmt.Errorf("a 300 ms deadline ended the watch after %d ms", took.Milliseconds())
		}
		return nil
	})

	s.check("message over the limit is RESOURCE_EXHAUSTED", func(ctx context.Context) error {
		_, err := s.commands.CreatePost(ctx, &postsv1.CreatePostRequest{
			Title: "huge", Content: strings.Repeat("x", tooLarge), AuthorName: s.author,
		})
		_, err = expectCode(err, codes.ResourceExhausted)
		return err
	})

	s.check("delete", func(ctx context.Context) error {
		deleted, err := s.commands.DeletePost(ctx, &postsv1.DeletePostRequest{PostId: postID, ExpectedVersion: 2})
		if err != nil {
			return err
		}
		if deleted.Version != 3 {
			return fmt.Errorf("version after the delete is 3, got %d", deleted.Version)
		}
		return nil
	})

	s.check("GetPost after delete is NOT_FOUND", func(ctx context.Context) error {
		// min_version 3 waits for the read model to apply the delete.
		_, err := s.queries.GetPost(ctx, &postsv1.GetPostRequest{PostId: postID, MinVersion: 3})
		if _, err := expectCode(err, codes.NotFound); err != nil {
			return err
		}
		got, err := s.queries.GetPost(ctx, &postsv1.GetPostRequest{PostId: postID, IncludeDeleted: true})
		if err != nil {
			return err
		}
		if !got.GetPost().GetDeleted() || got.GetPost().GetVersion() != 3 {
			return fmt.Errorf("include_deleted shows version %d, deleted=%v", got.GetPost().GetVersion(), got.GetPost().GetDeleted())
		}
		return nil
	})
}

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func main() {
	commandAddr := env("COMMAND_ADDR", "localhost:50051")
	queryAddr := env("QUERY_ADDR", "localhost:50052")
	fmt.Printf("%s client: command-svc %s, query-svc %s\n", lang, commandAddr, queryAddr)
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	commandConn, err := grpc.NewClient(commandAddr, creds)
	if err != nil {
		fmt.Println("FAIL  connect:", err)
		os.Exit(1)
	}
	defer commandConn.Close()
	queryConn, err := grpc.NewClient(queryAddr, creds)
	if err != nil {
		fmt.Println("FAIL  connect:", err)
		os.Exit(1)
	}
	defer queryConn.Close()

	salt := make([]byte, 4)
	_, _ = rand.Read(salt)
	s := &scenario{
		commands: postsv1.NewPostCommandClient(commandConn),
		queries:  postsv1.NewPostQueryClient(queryConn),
		author:   fmt.Sprintf("interop-%s-%s", lang, hex.EncodeToString(salt)),
	}
	s.run()
	fmt.Printf("%s client: all %d checks passed\n", lang, s.passed)
}
