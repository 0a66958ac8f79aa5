package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/secctx/secctx/pkg/agentapi"
)

// FetchConfig is the fetch init container's configuration.
type FetchConfig struct {
	// Store names the secret store: aws or vault.
	Store string
	// Secrets are the secrets to read, each with its file.
	Secrets []agentapi.Secret
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
	// Vault is the vault store's settings.
	Vault VaultConfig
	// CABundle is PEM certificates to trust besides the system's (vault).
	CABundle string
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
}

// terminationLog is the container's default terminationMessagePath.
var terminationLog = "/dev/termination-log"

// maxSecretSize bounds one value: Secrets Manager's own limit is 64 KiB,
// and the files live in memory.
const maxSecretSize = 1 << 20

// DefaultFetchConfig returns the fetch's defaults.
func DefaultFetchConfig() FetchConfig {
	return FetchConfig{Mode: 0o444, Timeout: 2 * time.Minute, MinBackoff: 500 * time.Millisecond, MaxBackoff: 10 * time.Second,
		Vault: VaultConfig{AuthPath: "kubernetes"}}
}

// store reads secrets from one secret store. An error it returns is
// transient (worth retrying) unless it is a permanentError.
type store interface {
	read(ctx context.Context, s agentapi.Secret) ([]byte, error)
}

// closer is a store that holds something to give back when the reads are
// done (Vault's login token). A failure to close is logged: the secrets
// are written by then.
type closer interface {
	close(ctx context.Context, log logr.Logger)
}

// stores opens a store by name. Each store's file adds itself, so that a
// new store adds a file and grows no switch.
var stores = map[string]func(ctx context.Context, cfg FetchConfig) (store, error){}

// permanentError is a failure that retrying cannot mend: a missing secret,
// a denied read, a bad request.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err} }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

func runFetch(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := parseFetchArgs(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "secctx-agent fetch:", err)
		return 2
	}
	cfg.CABundle = os.Getenv("SECCTX_CA_BUNDLE") // set by the webhook from the store's caBundle
	log := newLogger(stderr)
	if err := Fetch(ctx, cfg, log); err != nil {
		// The last line is what the kubelet shows as the init container's
		// termination message (FallbackToLogsOnError).
		log.Error(err, "fetch failed")
		msg := "secctx-agent fetch: " + err.Error()
		fmt.Fprintln(stderr, msg)
		// What kubectl describe shows for the init container; the file
		// exists only in a container.
		if f, err := os.OpenFile(terminationLog, os.O_WRONLY|os.O_TRUNC, 0); err == nil {
			_, _ = f.WriteString(msg)
			f.Close()
		}
		return 1
	}
	return 0
}

// parseFetchArgs reads the fetch's flags, as the webhook writes them.
func parseFetchArgs(args []string, stderr io.Writer) (FetchConfig, error) {
	cfg := DefaultFetchConfig()
	fs := flag.NewFlagSet("fetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var spec, mode string
	fs.StringVar(&cfg.Store, "store", "", "the secret store: aws or vault")
	fs.StringVar(&spec, "secrets", "", "the secrets, as JSON (written by the webhook)")
	fs.StringVar(&mode, "mode", "0444", "the files' permissions: 0400, 0440 or 0444")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "how long to keep trying, in all")
	fs.StringVar(&cfg.Vault.Address, "vault-address", "", "Vault's address")
	fs.StringVar(&cfg.Vault.Namespace, "vault-namespace", "", "Vault namespace (Vault Enterprise)")
	fs.StringVar(&cfg.Vault.AuthPath, "vault-auth-path", cfg.Vault.AuthPath, "the Kubernetes auth method's mount")
	fs.StringVar(&cfg.Vault.Role, "vault-role", "", "the Kubernetes auth role")
	fs.StringVar(&cfg.Vault.TokenFile, "vault-token-file", "", "the pod's service-account token")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	m, err := strconv.ParseUint(mode, 8, 32)
	if err != nil || (m != 0o400 && m != 0o440 && m != 0o444) {
		return cfg, fmt.Errorf("--mode %q: must be 0400, 0440 or 0444", mode)
	}
	cfg.Mode = os.FileMode(m)
	if cfg.Timeout <= 0 {
		return cfg, fmt.Errorf("--timeout %s: must be positive", cfg.Timeout)
	}
	if err := json.Unmarshal([]byte(spec), &cfg.Secrets); err != nil {
		return cfg, fmt.Errorf("--secrets: %w", err)
	}
	return cfg, nil
}

// Fetch reads every secret and writes it to its file. It stops at the
// first secret that cannot be had: the task must not start without it. A
// transient error is retried with backoff until cfg.Timeout; a missing
// secret or a denied read is not. No error names a value.
func Fetch(ctx context.Context, cfg FetchConfig, log logr.Logger) error {
	t0 := time.Now()
	open, ok := stores[cfg.Store]
	if !ok {
		return fmt.Errorf("store %q: unknown", cfg.Store)
	}
	for _, s := range cfg.Secrets {
		if f := s.File; !filepath.IsAbs(f) || filepath.Clean(f) != f || f == "/" {
			return fmt.Errorf("%s: file %q: must be a clean absolute path", s.Field, f)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var st store
	err := retry(ctx, cfg, log, "open "+cfg.Store, func() (err error) {
		st, err = open(ctx, cfg)
		return err
	})
	if err != nil {
		return err
	}
	if c, ok := st.(closer); ok {
		// On failure too: the token is of no use once the fetch ends. The
		// fetch's own deadline may have passed, so the close gets its own.
		defer func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			c.close(ctx, log)
		}()
	}
	for _, s := range cfg.Secrets {
		var v []byte
		err := retry(ctx, cfg, log, s.Field, func() (err error) {
			v, err = st.read(ctx, s)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s (%s): %w", s.Field, describeSecret(s), err)
		}
		if err := checkSize(s, v); err != nil {
			return fmt.Errorf("%s (%s): %w", s.Field, describeSecret(s), err)
		}
		if err := writeSecret(s.File, v, cfg.Mode); err != nil {
			return fmt.Errorf("%s: write %s: %w", s.Field, s.File, err)
		}
		log.Info("secret written", "field", s.Field, "secret", describeSecret(s), "file", s.File)
	}
	log.Info("all secrets written", "count", len(cfg.Secrets), "seconds", time.Since(t0).Seconds())
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

// describeSecret names a secret for a message: where it is, never what.
func describeSecret(s agentapi.Secret) string {
	d := s.ID
	if s.Key != "" {
		d += " key " + strconv.Quote(s.Key)
	}
	if s.Version != "" {
		d += " version " + strconv.Quote(s.Version)
	}
	return d
}

// retry calls f until it succeeds, fails for good, or ctx ends.
func retry(ctx context.Context, cfg FetchConfig, log logr.Logger, what string, f func() error) error {
	wait := cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || isPermanent(err) {
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

// writeSecret writes v to path with mode, making the directories on the
// way with the same read bits plus search.
func writeSecret(path string, v []byte, mode os.FileMode) error {
	dirMode := 0o700 | mode&0o044 | (mode&0o044)>>2 // the owner's rwx; r-x where the files are readable
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return err
	}
	return writeAtomic(path, v, mode)
}

// tokenSubject is the subject of a service-account token, for messages:
// system:serviceaccount:<namespace>:<name>. The token is not verified here;
// the store does that.
func tokenSubject(jwt string) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(b, &claims) != nil {
		return ""
	}
	return claims.Sub
}
