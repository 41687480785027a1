module example.com/postmesh-hello

go 1.26.0

require (
	github.com/postmesh/postmesh/clients/go v0.0.0
	google.golang.org/grpc v1.85.0
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20260825221802-da73d73af1c5 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260825221802-da73d73af1c5 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

// The module in this checkout (nothing is published yet); with the module
// published, `go get github.com/postmesh/postmesh/clients/go` replaces this line.
replace github.com/postmesh/postmesh/clients/go => ../../go
