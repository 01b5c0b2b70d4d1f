package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// grpc-go answers a request it cannot decode (say, invalid UTF-8 inside the
// claims Struct) with Internal, before any interceptor runs. Signet's own
// messages do not validate UTF-8 at decoding (utf8_validation = NONE: the
// service checks each string and names the field), and claims_json is such
// a string; but google.protobuf.Struct, which the claims field keeps for
// callers who prefer it, is proto3 and does, so this codec is still needed. A malformed
// request is the caller's error, so requestCodec lets decoding of Signet's
// own requests "succeed" with an empty message and remembers why it failed;
// rejectMalformed, the first interceptor, answers InvalidArgument with that
// reason. Every Signet RPC is unary, so every remembered request passes
// through the interceptor and is forgotten there.
type requestCodec struct{ encoding.CodecV2 }

var (
	malformedRequests sync.Map     // proto.Message -> decoding error text
	malformedPending  atomic.Int64 // entries in malformedRequests: 0, nearly always
)

func newRequestCodec() requestCodec {
	return requestCodec{encoding.GetCodecV2(protoenc.Name)}
}

func (c requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok || m.ProtoReflect().Descriptor().ParentFile().Package() != "signet.v1" {
		return err
	}
	proto.Reset(m)
	malformedPending.Add(1)
	malformedRequests.Store(m, err.Error())
	return nil
}

func rejectMalformed(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	// The request was decoded on this goroutine before the interceptors
	// ran, so a malformed one has been counted by now.
	if malformedPending.Load() > 0 {
		if why, ok := malformedRequests.LoadAndDelete(req); ok {
			malformedPending.Add(-1)
			return nil, toStatus(ctx, nil, &requestError{code: codes.InvalidArgument, reason: signetv1.ErrorReason_MALFORMED_REQUEST,
				msg: fmt.Sprintf("malformed request: %s", why)}).Err()
		}
	}
	return handler(ctx, req)
}
