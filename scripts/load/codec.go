package main

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// fixedCodec is the client codec of a ghz phase. ghz builds its requests as
// dynamic messages and decodes answers into them, which costs the client
// far more for a Sign (a Struct of claims, a token back) than for a health
// check; on a machine that client and server share, that difference would
// be charged to Signet. This codec sends the phase's request as encoded
// once and decodes each answer into the generated type, as a real client
// does, so the client costs about the same for every RPC.
type fixedCodec struct {
	request  []byte
	response func() proto.Message
}

func (c fixedCodec) Marshal(any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(c.request)}, nil
}

func (c fixedCodec) Unmarshal(data mem.BufferSlice, _ any) error {
	return proto.Unmarshal(data.Materialize(), c.response())
}

func (fixedCodec) Name() string { return "proto" }

func callOption(request proto.Message, response func() proto.Message) grpc.CallOption {
	b, err := proto.Marshal(request)
	if err != nil {
		panic(err)
	}
	return grpc.ForceCodecV2(fixedCodec{request: b, response: response})
}

// protoset is the FileDescriptorSet of Signet's API, gRPC health and
// Kubernetes' ExternalJWTSigner, with
// every import, from the descriptors compiled into this program: ghz
// needs the method descriptors, and server reflection would need a
// connection on which the codec above is not forced.
func protoset() []byte {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(signetv1.File_signet_v1_signet_proto)
	add(healthpb.File_grpc_health_v1_health_proto)
	add(externaljwtv1.File_staging_src_k8s_io_externaljwt_apis_v1_api_proto)
	b, err := proto.Marshal(set)
	if err != nil {
		panic(err)
	}
	return b
}
