package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/secctx/secctx/pkg/agent/internal/storekit"
	"github.com/secctx/secctx/pkg/agentapi"
)

// FetchConfig is the fetch init container's configuration.
type FetchConfig struct {
	// Secrets are the secrets to read, each with its store and its file.
	Secrets []agentapi.Secret
	// SetDir, when set, is the directory the FILE secrets are in, written
	// as one set that the sidecar may replace whole (writeSet): the
	// kubelet's layout for a Secret volume. Empty, each file is written
	// where it is.
	SetDir string
	// InstallDir, when set, is where to install the exec wrapper
	// (InstallWrapper) before the secrets are read.
	InstallDir string
	// MountPoints are directories to make beside the files: where the
	// kubelet mounts Kubernetes Secrets inside the fetched volume, which the
	// task mounts read-only, so that the runtime need not make them there.
	MountPoints []string
	// Mode is each file's permissions: 0400 when the webhook knows the
	// task's user (the fetch then runs as that user), 0440 when it knows
	// only the pod's fsGroup, 0444 otherwise. Directories get the same
	// bits plus search (x) where read is set.
	Mode os.FileMode
	// Timeout bounds the whole fetch, retries included.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts after a
	// transient error, which doubles from one to the other.
	MinBackoff, MaxBackoff time.Duration
	// Vault, GCP and Azure are the settings of those stores; aws takes
	// its own from the SDK's environment (IRSA).
	Vault VaultConfig
	GCP   GCPConfig
	Azure AzureConfig
}

// VaultConfig is how the fetch reaches Vault and logs in.
type VaultConfig struct {
	Address   string
	Namespace string
	// AuthPath is the Kubernetes auth method's mount (kubernetes).
	AuthPath string
	// Role is the Kubernetes auth role to log in as.
	Role string
	// TokenFile is the pod's projected service-account token.
	TokenFile string
	// CABundle is PEM certificates to trust for Vault besides the
	// system's (SECCTX_VAULT_CA_BUNDLE).
	CABundle string
}

// GCPConfig is how the fetch reaches Google Secret Manager and which
// identity it reads as: the GKE metadata server's (Workload Identity), or
// with Audience set, the pod's service-account token exchanged at STS
// (workload identity federation). The store that reads it is
// pkg/agent/gcp, in the secctx-fetch binary alone: its gRPC client would
// weigh on every process of secctx-agent, token sidecars included.
type GCPConfig struct {
	// Endpoint is Secret Manager's host:port.
	Endpoint string
	// Audience is the workload identity provider
	// (//iam.googleapis.com/projects/<n>/locations/global/workloadIdentityPools/<pool>/providers/<p>);
	// empty, the metadata server gives the token.
	Audience string
	// TokenURL is the STS token endpoint (federation).
	TokenURL string
	// TokenFile is the pod's projected service-account token (federation).
	TokenFile string
	// ServiceAccount, when set, is the Google service account whose token
	// the federated identity asks for (federation).
	ServiceAccount string
	// IAMEndpoint is the IAM credentials API's base URL (impersonation).
	IAMEndpoint string
	// CABundle is PEM certificates to trust besides the system's, for
	// Secret Manager and the STS and IAM calls (SECCTX_GCP_CA_BUNDLE).
	CABundle string
}

// The defaults of GCPConfig, Google's own endpoints.
const (
	gcpDefaultEndpoint    = "secretmanager.googleapis.com:443"
	gcpDefaultTokenURL    = "https://sts.googleapis.com/v1/token"
	gcpDefaultIAMEndpoint = "https://iamcredentials.googleapis.com"
)

// terminationLog is the container's default terminationMessagePath.
var terminationLog = "/dev/termination-log"

// writeTerminationMessage leaves msg as the container's termination
// message, which kubectl describe shows as its last state; the file
// exists only in a container.
func writeTerminationMessage(msg string) {
	if f, err := os.OpenFile(terminationLog, os.O_WRONLY|os.O_TRUNC, 0); err == nil {
		_, _ = f.WriteString(msg)
		f.Close()
	}
}

// maxSecretSize bounds one value.
const maxSecretSize = storekit.MaxSecretSize

// DefaultFetchConfig returns the fetch's defaults.
func DefaultFetchConfig() FetchConfig {
	return FetchConfig{Mode: 0o444, Timeout: 2 * time.Minute, MinBackoff: 500 * time.Millisecond, MaxBackoff: 10 * time.Second,
		Vault: VaultConfig{AuthPath: "kubernetes"},
		GCP:   GCPConfig{Endpoint: gcpDefaultEndpoint, TokenURL: gcpDefaultTokenURL, IAMEndpoint: gcpDefaultIAMEndpoint}}
}

// Store reads secrets from one secret store, opened for a fetch by its
// Opener. An error it returns is transient (worth retrying) unless
// Permanent made it.
type Store interface {
	Read(ctx context.Context, s agentapi.Secret) ([]byte, error)
}

// Closer is a Store that holds something to give back when the reads are
// done (Vault's login token, a connection). A failure to close is the
// store's to log: the secrets are written by then.
type Closer interface {
	Close(ctx context.Context, log logr.Logger)
}

// Opener opens a store for secrets, the ones of the fetch that name it: a
// check that looks at the secrets (vault's engines, aws's region) sees
// only its own. It reads its settings from cfg (its field of FetchConfig)
// and nothing of the environment.
type Opener func(ctx context.Context, cfg FetchConfig, secrets []agentapi.Secret) (Store, error)

// stores opens a store by name (agentapi.Secret.Store). Each store's file
// adds itself, so that a new store adds a file and grows no switch.
var stores = map[string]Opener{}

// RegisterStore makes the store name (agentapi.Secret.Store) one that
// Fetch reads, with open. A store registers itself from an init function:
// those of pkg/agent (aws, vault, azure) are in every binary that links
// it, and one in a package of its own (pkg/agent/gcp) only in a binary
// that imports that package (secctx-fetch). It panics if name is empty or
// already registered.
func RegisterStore(name string, open Opener) {
	if name == "" || open == nil {
		panic("agent: RegisterStore without a name or an opener")
	}
	if _, ok := stores[name]; ok {
		panic("agent: store " + name + " registered twice")
	}
	stores[name] = open
}

// permanentError is a failure that retrying cannot mend: a missing secret,
// a denied read, a bad request.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err, of a Store or an Opener, as one that retrying
// cannot mend: Fetch gives up at once.
func Permanent(err error) error { return &permanentError{err} }

// IsPermanent says whether err, or an error it wraps, was made by
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// program names the running binary in messages: secctx-fetch in the fetch
// init container, secctx-agent elsewhere.
func program() string {
	if len(os.Args) > 0 && filepath.Base(os.Args[0]) == "secctx-fetch" {
		return "secctx-fetch"
	}
	return "secctx-agent"
}

func runFetch(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := parseFetchArgs(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, program()+" fetch:", err)
		return 2
	}
	storeEnv(&cfg)
	log := newLogger(stderr)
	if err := Fetch(ctx, cfg, log); err != nil {
		// The last line is what the kubelet shows as the init container's
		// termination message (FallbackToLogsOnError).
		log.Error(err, "fetch failed")
		msg := program() + " fetch: " + err.Error()
		fmt.Fprintln(stderr, msg)
		writeTerminationMessage(msg)
		return 1
	}
	return 0
}

// parseFetchArgs reads the fetch's flags, as the webhook writes them.
func parseFetchArgs(args []string, stderr io.Writer) (FetchConfig, error) {
	cfg := DefaultFetchConfig()
	fs := flag.NewFlagSet("fetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "how long to keep trying, in all")
	fs.StringVar(&cfg.InstallDir, "install-dir", "", "install the exec wrapper (secctx-agent) into this directory first")
	finish := fetchFlags(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.Timeout <= 0 {
		return cfg, fmt.Errorf("--timeout %s: must be positive", cfg.Timeout)
	}
	return cfg, finish(true)
}

// fetchFlags adds the flags of the secrets and their stores to fs, which
// the fetch and the sidecar share; finish checks them once fs is parsed,
// --secrets only when it is needed.
func fetchFlags(fs *flag.FlagSet, cfg *FetchConfig) (finish func(secretsNeeded bool) error) {
	var spec, mode, mountPoints string
	fs.StringVar(&spec, "secrets", "", "the secrets, as JSON (written by the webhook)")
	fs.StringVar(&cfg.SetDir, "set-dir", "", "write the files below this directory as one set that is replaced whole (the sidecar refreshes it)")
	fs.StringVar(&mountPoints, "mount-points", "", "directories to make for the kubelet's mounts, as a JSON list")
	fs.StringVar(&mode, "mode", "0444", "the files' permissions: 0400, 0440 or 0444")
	fs.StringVar(&cfg.Vault.Address, "vault-address", "", "Vault's address")
	fs.StringVar(&cfg.Vault.Namespace, "vault-namespace", "", "Vault namespace (Vault Enterprise)")
	fs.StringVar(&cfg.Vault.AuthPath, "vault-auth-path", cfg.Vault.AuthPath, "the Kubernetes auth method's mount")
	fs.StringVar(&cfg.Vault.Role, "vault-role", "", "the Kubernetes auth role")
	fs.StringVar(&cfg.Vault.TokenFile, "vault-token-file", "", "the pod's service-account token")
	fs.StringVar(&cfg.GCP.Endpoint, "gcp-endpoint", cfg.GCP.Endpoint, "Secret Manager's endpoint, host:port (gRPC over TLS)")
	fs.StringVar(&cfg.GCP.Audience, "gcp-audience", "", "the workload identity provider, for federation (empty: the GKE metadata server)")
	fs.StringVar(&cfg.GCP.TokenURL, "gcp-token-url", cfg.GCP.TokenURL, "the STS token endpoint (federation)")
	fs.StringVar(&cfg.GCP.TokenFile, "gcp-token-file", "", "the pod's service-account token (federation)")
	fs.StringVar(&cfg.GCP.ServiceAccount, "gcp-service-account", "", "the Google service account to impersonate (federation)")
	fs.StringVar(&cfg.GCP.IAMEndpoint, "gcp-iam-endpoint", cfg.GCP.IAMEndpoint, "the IAM credentials API's base URL (impersonation)")
	return func(secretsNeeded bool) error {
		m, err := strconv.ParseUint(mode, 8, 32)
		if err != nil || (m != 0o400 && m != 0o440 && m != 0o444) {
			return fmt.Errorf("--mode %q: must be 0400, 0440 or 0444", mode)
		}
		cfg.Mode = os.FileMode(m)
		if spec != "" || secretsNeeded {
			if err := json.Unmarshal([]byte(spec), &cfg.Secrets); err != nil {
				return fmt.Errorf("--secrets: %w", err)
			}
		}
		if mountPoints != "" {
			if err := json.Unmarshal([]byte(mountPoints), &cfg.MountPoints); err != nil {
				return fmt.Errorf("--mount-points: %w", err)
			}
		}
		return nil
	}
}

// storeEnv reads the stores' settings that the webhook puts in the
// environment, from each store's caBundle and from the pod's Azure
// Workload Identity; read here so that the stores' constructors see
// nothing of the environment that the config does not say.
func storeEnv(cfg *FetchConfig) {
	cfg.Vault.CABundle = os.Getenv("SECCTX_VAULT_CA_BUNDLE")
	cfg.GCP.CABundle = os.Getenv("SECCTX_GCP_CA_BUNDLE")
	cfg.Azure.CABundle = os.Getenv("SECCTX_AZURE_CA_BUNDLE")
	cfg.Azure.ClientID = os.Getenv("AZURE_CLIENT_ID")
	cfg.Azure.TenantID = os.Getenv("AZURE_TENANT_ID")
	cfg.Azure.TokenFile = os.Getenv("AZURE_FEDERATED_TOKEN_FILE")
	cfg.Azure.AuthorityHost = os.Getenv("AZURE_AUTHORITY_HOST")
}

// Fetch reads every secret from its store (Secret.Store) and writes it to
// its file. Each store the secrets name is opened once, as the pod's own
// identity for that store, before any secret is read. It stops at the
// first secret that cannot be had: the task must not start without it. A
// transient error is retried with backoff until cfg.Timeout; a missing
// secret or a denied read is not. No error names a value.
func Fetch(ctx context.Context, cfg FetchConfig, log logr.Logger) error {
	t0 := time.Now()
	// The stores in order of first use, each with its secrets.
	var names []string
	bySt := map[string][]agentapi.Secret{}
	for _, s := range cfg.Secrets {
		if _, ok := stores[s.Store]; !ok {
			return fmt.Errorf("%s: store %q: unknown; one of %s", s.Field, s.Store, strings.Join(slices.Sorted(maps.Keys(stores)), ", "))
		}
		if _, ok := bySt[s.Store]; !ok {
			names = append(names, s.Store)
		}
		bySt[s.Store] = append(bySt[s.Store], s)
	}
	if err := cfg.checkLayout(); err != nil {
		return err
	}
	if cfg.InstallDir != "" {
		if err := InstallWrapper(cfg.InstallDir); err != nil {
			return fmt.Errorf("install the exec wrapper: %w", err)
		}
		log.Info("exec wrapper installed", "dir", cfg.InstallDir)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	opened := map[string]Store{}
	// On failure too: a login token is of no use once the fetch ends. The
	// fetch's own deadline may have passed, so the closes get their own.
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for _, name := range slices.Backward(names) {
			if c, ok := opened[name].(Closer); ok {
				c.Close(ctx, log.WithValues("store", name))
			}
		}
	}()
	// Every store is opened before any secret is read, so that a store
	// that refuses the pod fails it with nothing written.
	for _, name := range names {
		var st Store
		err := retry(ctx, cfg, log.WithValues("store", name), "open "+name, func() (err error) {
			st, err = stores[name](ctx, cfg, bySt[name])
			return err
		})
		if err != nil {
			return fmt.Errorf("open store %s: %w", name, err)
		}
		opened[name] = st
		log.Info("store opened", "store", name, "secrets", len(bySt[name]))
	}
	set := map[string][]byte{}
	for _, s := range cfg.Secrets {
		var v []byte
		err := retry(ctx, cfg, log.WithValues("store", s.Store), s.Field, func() (err error) {
			v, err = opened[s.Store].Read(ctx, s)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s (%s): %w", s.Field, storekit.Describe(s), err)
		}
		if err := checkSize(s, v); err != nil {
			return fmt.Errorf("%s (%s): %w", s.Field, storekit.Describe(s), err)
		}
		if rel, ok := cfg.inSet(s); ok {
			set[rel] = v
			log.Info("secret read", "field", s.Field, "store", s.Store, "secret", storekit.Describe(s), "file", s.File)
			continue
		}
		if err := writeSecret(s.File, v, cfg.Mode); err != nil {
			return fmt.Errorf("%s: write %s: %w", s.Field, s.File, err)
		}
		log.Info("secret written", "field", s.Field, "store", s.Store, "secret", storekit.Describe(s), "file", s.File)
	}
	if len(set) > 0 {
		if _, err := writeSet(cfg.SetDir, set, cfg.Mode); err != nil {
			return fmt.Errorf("write the secrets' set in %s: %w", cfg.SetDir, err)
		}
		log.Info("secrets written as one set", "count", len(set), "dir", cfg.SetDir)
	}
	for _, d := range cfg.MountPoints {
		if err := os.MkdirAll(d, dirMode(cfg.Mode)); err != nil {
			return fmt.Errorf("make mount point %s: %w", d, err)
		}
	}
	log.Info("all secrets written", "count", len(cfg.Secrets), "stores", names, "seconds", time.Since(t0).Seconds())
	return nil
}

// inSet says whether s is a file of the set in SetDir, and its path there.
func (cfg FetchConfig) inSet(s agentapi.Secret) (string, bool) {
	if cfg.SetDir == "" || s.EnvVar {
		return "", false
	}
	rel, err := filepath.Rel(cfg.SetDir, s.File)
	if err != nil || !filepath.IsLocal(rel) {
		return "", false
	}
	return rel, true
}

// checkLayout refuses paths the fetch must not write: a file or a mount
// point that is not a clean absolute path, a file of the set whose first
// name the layout keeps (..data), and a mount point inside a name of the
// set, which would be inside the set's directory and gone at the next
// refresh.
func (cfg FetchConfig) checkLayout() error {
	if d := cfg.SetDir; d != "" && (!filepath.IsAbs(d) || filepath.Clean(d) != d || d == "/") {
		return fmt.Errorf("set directory %q: must be a clean absolute path", d)
	}
	top := map[string]string{}
	for _, s := range cfg.Secrets {
		if f := s.File; !filepath.IsAbs(f) || filepath.Clean(f) != f || f == "/" {
			return fmt.Errorf("%s: file %q: must be a clean absolute path", s.Field, f)
		}
		if rel, ok := cfg.inSet(s); ok {
			name := strings.SplitN(rel, "/", 2)[0]
			if strings.HasPrefix(name, "..") {
				return fmt.Errorf("%s: file %q: a name starting with .. in %s is the set's own", s.Field, s.File, cfg.SetDir)
			}
			top[name] = s.Field
		}
	}
	for _, d := range cfg.MountPoints {
		if !filepath.IsAbs(d) || filepath.Clean(d) != d || d == "/" {
			return fmt.Errorf("mount point %q: must be a clean absolute path", d)
		}
		if rel, err := filepath.Rel(cfg.SetDir, d); cfg.SetDir != "" && err == nil && filepath.IsLocal(rel) {
			if field, ok := top[strings.SplitN(rel, "/", 2)[0]]; ok {
				return fmt.Errorf("mount point %s: inside the directory of %s, which is refreshed as a set", d, field)
			}
		}
	}
	return nil
}

// checkSize refuses a value the task could not be given: one over the
// size of a file this agent writes, and for an env var one that the
// kernel would refuse at execve (E2BIG, "argument list too long", naming
// nothing) or that would be cut at its first NUL byte.
func checkSize(s agentapi.Secret, v []byte) error {
	if s.EnvVar {
		if len(v) > agentapi.MaxEnvValueBytes {
			return fmt.Errorf("%d bytes, more than the %d an env var's value may have (ask for it as a FILE)", len(v), agentapi.MaxEnvValueBytes)
		}
		if i := bytes.IndexByte(v, 0); i >= 0 {
			return fmt.Errorf("a NUL byte at offset %d, which an env var cannot hold (ask for it as a FILE)", i)
		}
	}
	if len(v) > maxSecretSize {
		return fmt.Errorf("%d bytes, more than the %d this agent writes", len(v), maxSecretSize)
	}
	return nil
}

// retry calls f until it succeeds, fails for good, or ctx ends.
func retry(ctx context.Context, cfg FetchConfig, log logr.Logger, what string, f func() error) error {
	wait := cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || IsPermanent(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("gave up after %d attempts in %s: %w", attempt, cfg.Timeout, err)
		}
		log.Info("transient error, will retry", "what", what, "attempt", attempt, "in", wait.String(), "error", err.Error())
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %d attempts in %s: %w", attempt, cfg.Timeout, err)
		case <-time.After(jitter(wait)):
		}
		wait = min(2*wait, cfg.MaxBackoff)
	}
}

// dirMode is a directory's mode for files of mode: the owner's rwx; r-x
// where the files are readable.
func dirMode(mode os.FileMode) os.FileMode { return 0o700 | mode&0o044 | (mode&0o044)>>2 }

// writeSecret writes v to path with mode, making the directories on the
// way with the same read bits plus search.
func writeSecret(path string, v []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), dirMode(mode)); err != nil {
		return err
	}
	return writeAtomic(path, v, mode)
}
