package inject

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/secctx/secctx/pkg/agentapi"
	"github.com/secctx/secctx/pkg/securityctx"
)

// BackendGCP is Google Secret Manager, read by the fetch init container.
const BackendGCP = "gcp"

func init() { stores[BackendGCP] = gcpStore{} }

// GCPConfig is the gcp backend's settings (docs/backends.md).
type GCPConfig struct {
	// Project is the project of a secret whose group is its name alone.
	Project string `json:"project,omitempty"`
	// Endpoint, host:port, replaces secretmanager.googleapis.com:443 (a
	// Private Service Connect endpoint, or a test server).
	Endpoint string `json:"endpoint,omitempty"`
	// CABundle is PEM certificates to trust for Secret Manager, STS and the
	// IAM credentials API besides the system's.
	CABundle string `json:"caBundle,omitempty"`
	// MetadataHost, host:port, is GCE_METADATA_HOST in the fetch: where the
	// GKE metadata server answers, when not at its usual address.
	MetadataHost string `json:"metadataHost,omitempty"`
	// Federation, when set, is Workload Identity Federation (a cluster
	// outside GKE); unset, the fetch asks the GKE metadata server (GKE
	// Workload Identity).
	Federation *GCPFederation `json:"federation,omitempty"`
}

// GCPFederation is Workload Identity Federation with the cluster as an
// OIDC provider: the pod's projected service-account token is exchanged at
// Google STS for an access token of the pool's principal for the pod's
// account, optionally impersonating a Google service account.
type GCPFederation struct {
	// Audience is the workload identity pool provider:
	// //iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>.
	Audience string `json:"audience"`
	// TokenAudience is the projected token's audience: the provider's
	// allowed audience; default https: followed by Audience, Google's default.
	TokenAudience string `json:"tokenAudience,omitempty"`
	// TokenURL is STS's token endpoint (https://sts.googleapis.com/v1/token).
	TokenURL string `json:"tokenURL,omitempty"`
	// ServiceAccount, when set, is the Google service account (an email)
	// the fetch impersonates; the pool's principal needs
	// roles/iam.workloadIdentityUser on it.
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// IAMEndpoint is the IAM credentials API (https://iamcredentials.googleapis.com).
	IAMEndpoint string `json:"iamEndpoint,omitempty"`
}

// What the gcp fetch is given.
const (
	// EnvGCPCABundle carries inject.gcp.caBundle to the fetch.
	EnvGCPCABundle = "SECCTX_GCP_CA_BUNDLE"
	// EnvGCEMetadataHost is where Google's libraries find the metadata server.
	EnvGCEMetadataHost = "GCE_METADATA_HOST"
	gcpTokenVolumeName = "secctx-gcp-token"
	gcpTokenDir        = "/var/run/secrets/secctx/gcp"
	// gcpTokenSeconds is the federation token's lifetime: the fetch
	// exchanges it once, at once.
	gcpTokenSeconds    int64 = 600
	gcpDefaultTokenURL       = "https://sts.googleapis.com/v1/token"
	gcpDefaultIAM            = "https://iamcredentials.googleapis.com"
)

// gcpStore reads Google Secret Manager as the pod's own identity: the GKE
// metadata server's (Workload Identity), or a federated one.
//
// The mapping is Flyte's GCP secret manager: the group is the secret (a
// name in inject.gcp.project, or projects/<p>/secrets/<s>) and groupVersion
// its version (latest when empty); the file is
// <secretsDir>/<lower group>[/<lower groupVersion>], where flytekit looks
// for (group, groupVersion). A key, which Flyte leaves out, names a field of
// a JSON secret, written to <...>/<lower key> as flytekit finds it.
type gcpStore struct{}

func (gcpStore) fetched(Config) bool { return true }

// owns: projects/<p>/secrets/<s>.
func (gcpStore) owns(_ Config, group string) bool {
	return strings.HasPrefix(group, "projects/") && gcpSecretName.MatchString(group)
}

var (
	gcpSecretName = regexp.MustCompile(`^projects/([a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20})/secrets/[A-Za-z0-9_-]{1,255}$`)
	gcpSecretID   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)
	gcpProject    = regexp.MustCompile(`^([a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20})$`)
	gcpVersion    = regexp.MustCompile(`^([1-9][0-9]{0,18}|latest)$`)
	jsonFieldName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,256}$`)
	gcpProvider   = regexp.MustCompile(`^//iam\.googleapis\.com/projects/[0-9]+/locations/global/workloadIdentityPools/[a-z0-9-]{4,32}/providers/[a-z0-9-]{4,32}$`)
	gcpEmail      = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.-]+\.iam\.gserviceaccount\.com$`)
	hostPort      = regexp.MustCompile(`^[A-Za-z0-9.-]+:[0-9]{1,5}$|^\[[0-9a-fA-F:]+\]:[0-9]{1,5}$`)
)

func (gcpStore) validate(c Config) error {
	g := c.GCP
	if g.Project != "" && !gcpProject.MatchString(g.Project) {
		return fmt.Errorf("inject.gcp.project %q: must be a project id (6 to 30 lower-case letters, digits and -) or number", g.Project)
	}
	for _, e := range []struct{ field, v string }{{"inject.gcp.endpoint", g.Endpoint}, {"inject.gcp.metadataHost", g.MetadataHost}} {
		if e.v != "" && !hostPort.MatchString(e.v) {
			return fmt.Errorf("%s %q: must be host:port", e.field, e.v)
		}
	}
	if g.CABundle != "" {
		if err := checkPEM(g.CABundle); err != nil {
			return fmt.Errorf("inject.gcp.caBundle: %w", err)
		}
	}
	if f := g.Federation; f != nil {
		if !gcpProvider.MatchString(f.Audience) {
			return errors.New("inject.gcp.federation.audience: must be a workload identity pool provider, //iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>")
		}
		if len(f.TokenAudience) > 256 || strings.ContainsAny(f.TokenAudience, " \t\n\r\x00") {
			return fmt.Errorf("inject.gcp.federation.tokenAudience %q: must be at most 256 characters, without spaces", f.TokenAudience)
		}
		for _, e := range []struct{ field, url string }{{"inject.gcp.federation.tokenURL", f.TokenURL}, {"inject.gcp.federation.iamEndpoint", f.IAMEndpoint}} {
			if e.url != "" {
				if err := checkURL(e.field, e.url, c.Tokens.HTTPHosts); err != nil {
					return err
				}
			}
		}
		if f.ServiceAccount != "" && !gcpEmail.MatchString(f.ServiceAccount) {
			return fmt.Errorf("inject.gcp.federation.serviceAccount %q: must be a Google service account's email, <name>@<project>.iam.gserviceaccount.com", f.ServiceAccount)
		}
	}
	return checkAgentImage(c, "backend gcp")
}

func (gcpStore) plan(cfg Config, secrets []securityctx.Secret, fields []string) (*secretPlan, securityctx.ErrorList) {
	g := cfg.GCP
	fp := &fetchPlan{store: BackendGCP, desc: "Google Secret Manager", keyOptional: true}
	if g.Endpoint != "" {
		fp.args = append(fp.args, "--gcp-endpoint="+g.Endpoint)
	}
	if g.CABundle != "" {
		fp.env = append(fp.env, corev1.EnvVar{Name: EnvGCPCABundle, Value: g.CABundle})
	}
	if f := g.Federation; f != nil {
		aud := f.TokenAudience
		if aud == "" {
			aud = "https:" + f.Audience
		}
		fp.args = append(fp.args, "--gcp-audience="+f.Audience, "--gcp-token-url="+or(f.TokenURL, gcpDefaultTokenURL),
			"--gcp-token-file="+gcpTokenDir+"/token")
		if f.ServiceAccount != "" {
			fp.args = append(fp.args, "--gcp-service-account="+f.ServiceAccount, "--gcp-iam-endpoint="+or(f.IAMEndpoint, gcpDefaultIAM))
		}
		// A token of its own, for the pod's final account, with the
		// provider's audience: the API token is not for Google.
		fp.volumes = append(fp.volumes, loginTokenVolume(gcpTokenVolumeName, aud, "token", gcpTokenSeconds))
		fp.mounts = append(fp.mounts, corev1.VolumeMount{Name: gcpTokenVolumeName, MountPath: gcpTokenDir, ReadOnly: true})
	} else if g.MetadataHost != "" {
		fp.env = append(fp.env, corev1.EnvVar{Name: EnvGCEMetadataHost, Value: g.MetadataHost})
	}
	return planFetched(cfg, fp, secrets, fields, func(s *securityctx.Secret, field string) (agentapi.Secret, securityctx.ErrorList) {
		return locateGCP(g, s, field)
	})
}

func locateGCP(g GCPConfig, s *securityctx.Secret, field string) (agentapi.Secret, securityctx.ErrorList) {
	var errs securityctx.ErrorList
	id := s.Group
	switch {
	case gcpSecretName.MatchString(s.Group):
	case gcpSecretID.MatchString(s.Group) && g.Project != "":
		id = "projects/" + g.Project + "/secrets/" + s.Group
	case gcpSecretID.MatchString(s.Group):
		errs = append(errs, securityctx.Invalid(field+".group", s.Group,
			"with backend gcp, a secret named alone needs inject.gcp.project, which is not set: give projects/<project>/secrets/<secret>"))
	default:
		errs = append(errs, securityctx.Invalid(field+".group", s.Group,
			"with backend gcp, must be a Secret Manager secret: its id (1 to 255 letters, digits, _ and -) or projects/<project>/secrets/<id>"))
	}
	if v := s.GroupVersion; v != "" && !gcpVersion.MatchString(v) {
		errs = append(errs, securityctx.Invalid(field+".groupVersion", v, "with backend gcp, a Secret Manager version: a number, or latest"))
	}
	if k := s.Key; k != "" && !jsonFieldName.MatchString(k) {
		errs = append(errs, securityctx.Invalid(field+".key", k,
			"with backend gcp, the field of a JSON secret to read: 1 to 256 letters, digits, _ . and -; leave it out for the whole value"))
	}
	return agentapi.Secret{ID: id, Version: s.GroupVersion, Key: s.Key}, errs
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
