package gcp

import (
	"context"
	"hash/crc32"
	"net/http"
	"strings"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	rpccode "google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// secretManager serves google.cloud.secretmanager.v1.SecretManagerService:
// the reads a workload makes, over gRPC and over REST (JSON over HTTPS) on
// one port, as secretmanager.googleapis.com:443 does. The rest answers
// Unimplemented; tests set secrets up through the Server's Go API.
type secretManager struct {
	secretmanagerpb.UnimplementedSecretManagerServiceServer
	s *Server
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// handler sends gRPC to the gRPC server and the rest to the REST mapping
// (GET /v1/{name=projects/*/secrets/*/versions/*}:access, GET
// /v1/{name=...versions/*}).
func (m *secretManager) handler(g *grpc.Server) http.Handler {
	rest := http.NewServeMux()
	rest.HandleFunc("GET /v1/{name...}", m.serveREST)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			g.ServeHTTP(w, r)
			return
		}
		rest.ServeHTTP(w, r)
	})
}

// AccessSecretVersion returns a version's payload with its CRC32C, which
// the official client may verify.
func (m *secretManager) AccessSecretVersion(ctx context.Context, req *secretmanagerpb.AccessSecretVersionRequest) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	return m.access(bearer(ctx), req.GetName())
}

// GetSecretVersion returns a version's metadata, whatever its state.
func (m *secretManager) GetSecretVersion(ctx context.Context, req *secretmanagerpb.GetSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return m.getVersion(bearer(ctx), req.GetName())
}

func (m *secretManager) access(auth, name string) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	principal, name, v, err := m.authorize(auth, "secretmanager.versions.access", name)
	if err != nil {
		return nil, err
	}
	if v.state != secretmanagerpb.SecretVersion_ENABLED {
		m.s.journal.Refused("secretmanager", principal, name, "the version is "+v.state.String())
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is in %s state.", name, v.state)
	}
	m.s.journal.Granted("secretmanager", principal, name)
	crc := int64(crc32.Checksum(v.data, castagnoli))
	return &secretmanagerpb.AccessSecretVersionResponse{Name: name,
		Payload: &secretmanagerpb.SecretPayload{Data: v.data, DataCrc32C: &crc}}, nil
}

func (m *secretManager) getVersion(auth, name string) (*secretmanagerpb.SecretVersion, error) {
	principal, name, v, err := m.authorize(auth, "secretmanager.versions.get", name)
	if err != nil {
		return nil, err
	}
	m.s.journal.Granted("secretmanager", principal, name+" (metadata)")
	return v.proto(name), nil
}

// authorize checks, in Google's order, the caller's token, the grant on
// the secret (so that a caller without one cannot tell whether the secret
// exists), then that the version exists.
func (m *secretManager) authorize(auth, permission, name string) (principal, resolved string, v *version, err error) {
	principal, err = m.s.principalOf(auth)
	if err != nil {
		m.s.journal.Refused("secretmanager", "", name, err.Error())
		return "", "", nil, status.Error(codes.Unauthenticated,
			"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.")
	}
	secret, n, err := m.s.versionName(name)
	if err != nil {
		m.s.journal.Refused("secretmanager", principal, name, err.Error())
		return "", "", nil, status.Errorf(codes.InvalidArgument, "Invalid resource field value in the request: %v", err)
	}
	if !m.s.granted(principal, secret) {
		m.s.journal.Refused("secretmanager", principal, name, "no grant on "+secret)
		return "", "", nil, status.Errorf(codes.PermissionDenied,
			"Permission '%s' denied for resource '%s/versions/%s' (or it may not exist); %s has no grant on %s.", permission, secret, n, principal, secret)
	}
	resolved, v, err = m.s.lookup(secret, n)
	if err != nil {
		m.s.journal.Refused("secretmanager", principal, name, "not found")
		return "", "", nil, status.Error(codes.NotFound, err.Error())
	}
	return principal, resolved, v, nil
}

// serveREST is the REST mapping of the same calls, with Google's JSON:
// proto3 JSON for answers, google.rpc.Status for errors.
func (m *secretManager) serveREST(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	auth := r.Header.Get("Authorization")
	var res proto.Message
	var err error
	if n, ok := strings.CutSuffix(name, ":access"); ok {
		res, err = m.access(auth, n)
	} else {
		res, err = m.getVersion(auth, name)
	}
	if err != nil {
		st := status.Convert(err)
		googleError(w, httpStatus(st.Code()), rpccode.Code(st.Code()).String(), st.Message())
		return
	}
	b, err := protojson.Marshal(res)
	if err != nil {
		googleError(w, http.StatusInternalServerError, "INTERNAL", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(b)
}

// httpStatus is the HTTP status Google's REST APIs give a gRPC code.
func httpStatus(c codes.Code) int {
	switch c {
	case codes.InvalidArgument, codes.FailedPrecondition:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.Unimplemented:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

// bearer is the authorization metadata of a gRPC call.
func bearer(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if a := md.Get("authorization"); len(a) > 0 {
			return a[0]
		}
	}
	return ""
}
