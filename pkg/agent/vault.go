package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	vault "github.com/hashicorp/vault/api"

	"github.com/secctx/secctx/pkg/agent/internal/storekit"
	"github.com/secctx/secctx/pkg/agentapi"
)

func init() { RegisterStore(agentapi.StoreVault, openVault) }

// vaultStore reads Vault after a login with the Kubernetes auth method, as
// the pod's own service account: Vault checks the token with a
// TokenReview, and the role decides which accounts may read what.
type vaultStore struct {
	client *vault.Client
	cfg    VaultConfig
	// mu guards the login: the sidecar renews it while it reads. A read
	// holds it for reading, so that no token is revoked under a read.
	mu sync.RWMutex
	// relogged: the current login was made because a read was refused
	// (403); another refusal is the policy's answer, not a dead token.
	relogged bool
	// loggedIn and ttl are the login token's; renewable says whether
	// Vault lets it be renewed.
	loggedIn  time.Time
	ttl       time.Duration
	renewable bool

	// lmu guards the leases of dynamic secrets, by path, and the tokens
	// a new login replaced that still own some of them.
	lmu     sync.Mutex
	leases  map[string]*vaultLease
	retired []string
	// expiring tells the sidecar that a lease is due to be replaced;
	// leased that a read took a new one, to renew in time.
	expiring, leased chan struct{}
}

// vaultLease is one read of a dynamic secret (the database engine's
// creds/<role>): a database user that lives as long as the lease, and as
// long as the login token that read it. Every key of the path comes from
// the same read, so that a username and its password always match.
type vaultLease struct {
	id   string
	data map[string]any
	// ttl is the lease's first duration, asked for again at each renewal;
	// left is what Vault granted at the last one, at renewed.
	ttl, left time.Duration
	renewed   time.Time
	renewable bool
	// token is the login token that read it: revoking that token
	// revokes the lease.
	token string
	// due: the lease is to be replaced (near its max TTL, not renewable,
	// or its token replaced); replace: at this round, which the first
	// read of the path does.
	due, replace bool
}

func openVault(ctx context.Context, cfg FetchConfig, secrets []agentapi.Secret) (Store, error) {
	v := cfg.Vault
	if v.Address == "" || v.Role == "" || v.TokenFile == "" {
		return nil, Permanent(errors.New("vault: --vault-address, --vault-role and --vault-token-file are required"))
	}
	// Before the login: a secret that cannot be read fails the pod at
	// once, with nothing written and no token made.
	for _, s := range secrets {
		if err := vaultEngineOK(s, cfg.SetDir); err != nil {
			return nil, Permanent(fmt.Errorf("%s (%s): %w", s.Field, storekit.Describe(s), err))
		}
	}
	// Built from the arguments alone: VAULT_* variables a task image may
	// carry do not apply to the agent.
	vc := &vault.Config{Address: v.Address, HttpClient: cleanHTTPClient(), MaxRetries: 0, Timeout: 30e9}
	if v.CABundle != "" {
		if err := vc.ConfigureTLS(&vault.TLSConfig{CACertBytes: []byte(v.CABundle)}); err != nil {
			return nil, Permanent(fmt.Errorf("vault: SECCTX_VAULT_CA_BUNDLE: %w", err))
		}
	}
	client, err := vault.NewClient(vc)
	if err != nil {
		return nil, Permanent(fmt.Errorf("vault: %w", err))
	}
	client.ClearToken() // never VAULT_TOKEN from the environment
	if v.Namespace != "" {
		client.SetNamespace(v.Namespace)
	}
	vs := &vaultStore{client: client, cfg: v, leases: map[string]*vaultLease{},
		expiring: make(chan struct{}, 1), leased: make(chan struct{}, 1)}
	if err := vs.login(ctx); err != nil {
		return nil, err
	}
	return vs, nil
}

// login logs in with the pod's service-account token, read anew each time:
// the kubelet renews the projected token, and the sidecar logs in again
// long after the fetch's.
func (vs *vaultStore) login(ctx context.Context) error {
	v := vs.cfg
	jwt, err := os.ReadFile(v.TokenFile)
	if err != nil {
		return Permanent(fmt.Errorf("vault: read the pod's service-account token: %w", err))
	}
	who := storekit.TokenSubject(string(jwt))
	login := fmt.Sprintf("vault login at auth/%s as role %q with the pod's service account %s", v.AuthPath, v.Role, who)
	// The login itself carries no token: an expired one would be sent.
	c, err := vs.client.Clone()
	if err != nil {
		return fmt.Errorf("%s: %w", login, err)
	}
	c.ClearToken()
	secret, err := c.Logical().WriteWithContext(ctx, "auth/"+v.AuthPath+"/login", map[string]any{
		"role": v.Role, "jwt": strings.TrimSpace(string(jwt)),
	})
	if err != nil {
		return vaultError(login, err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return Permanent(fmt.Errorf("%s: no token in Vault's answer", login))
	}
	vs.client.SetToken(secret.Auth.ClientToken)
	vs.loggedIn, vs.ttl, vs.renewable = time.Now(), time.Duration(secret.Auth.LeaseDuration)*time.Second, secret.Auth.Renewable
	vs.relogged = false
	return nil
}

// Renew keeps the login token alive, for the sidecar: at two thirds of its
// TTL it is renewed (auth/token/renew-self), or, when Vault will not renew
// it (not renewable, an error, or a TTL cut short by the role's max TTL),
// replaced by a new login. A token without a TTL (root-like) is left alone.
// The leases are renewed whatever the login's fate: a login that failed
// leaves the current token, which may well renew them. With an error the
// wait returned is the leases' alone.
func (vs *vaultStore) Renew(ctx context.Context, log logr.Logger) (time.Duration, error) {
	next, err := vs.renewLogin(ctx, log)
	leases := vs.renewLeases(ctx, log)
	if err != nil {
		return leases, err
	}
	return min(next, leases), nil
}

func (vs *vaultStore) renewLogin(ctx context.Context, log logr.Logger) (time.Duration, error) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if vs.ttl <= 0 {
		return time.Hour, nil
	}
	due := vs.loggedIn.Add(vs.ttl * 2 / 3)
	if wait := time.Until(due); wait > 0 {
		return wait, nil
	}
	if vs.renewable {
		secret, err := vs.client.Auth().Token().RenewSelfWithContext(ctx, int(vs.ttl.Seconds()))
		switch {
		case err != nil:
			log.Info("vault login token not renewed: logging in again", "error", vaultError("vault renew the login token (auth/token/renew-self)", err).Error())
		case secret == nil || secret.Auth == nil:
			log.Info("vault login token not renewed: logging in again", "error", "no auth in Vault's answer")
		case time.Duration(secret.Auth.LeaseDuration)*time.Second < vs.ttl/2:
			log.Info("vault login token near its max TTL: logging in again", "ttl", secret.Auth.LeaseDuration)
		default:
			vs.loggedIn, vs.ttl = time.Now(), time.Duration(secret.Auth.LeaseDuration)*time.Second
			log.Info("vault login token renewed", "ttl", vs.ttl.String())
			return vs.ttl * 2 / 3, nil
		}
	}
	old := vs.client.Token()
	if err := vs.login(ctx); err != nil {
		return 0, err
	}
	vs.retire(ctx, old, log)
	log.Info("vault logged in again", "ttl", vs.ttl.String())
	return max(vs.ttl*2/3, time.Second), nil
}

// renewLeases renews each lease at two thirds of what Vault last granted
// it, asking for its first duration again. A lease Vault grants less (its
// max TTL is near), will not renew, or has lost is due to be replaced:
// the sidecar is told at once (Expiring) and reads the secret anew while
// the old value still works. It returns the wait until the next renewal.
func (vs *vaultStore) renewLeases(ctx context.Context, log logr.Logger) time.Duration {
	vs.lmu.Lock()
	defer vs.lmu.Unlock()
	next, due := time.Hour, false
	for path, l := range vs.leases {
		if l.due || l.replace {
			continue
		}
		at := l.renewed.Add(l.left * 2 / 3)
		if wait := time.Until(at); wait > 0 {
			next = min(next, wait)
			continue
		}
		if !l.renewable {
			log.Info("vault lease not renewable: reading the secret anew", "path", path, "lease", l.id)
			l.due, due = true, true
			continue
		}
		secret, err := vs.client.Sys().RenewWithContext(ctx, l.id, int(l.ttl.Seconds()))
		left := time.Until(l.renewed.Add(l.left))
		switch {
		case err != nil && !IsPermanent(vaultError("", err)) && left > l.ttl/3:
			// Vault away for a moment: renewing again soon costs less
			// than a new database user.
			retry := max(left/4, time.Second)
			log.Info("vault lease not renewed: trying again", "path", path, "lease", l.id, "retryIn", retry.String(), "error", vaultError("vault renew lease (sys/leases/renew)", err).Error())
			next = min(next, retry)
		case err != nil:
			log.Info("vault lease not renewed: reading the secret anew", "path", path, "lease", l.id, "error", vaultError("vault renew lease (sys/leases/renew)", err).Error())
			l.due, due = true, true
		case secret == nil || time.Duration(secret.LeaseDuration)*time.Second < l.ttl:
			log.Info("vault lease near its max TTL: reading the secret anew", "path", path, "lease", l.id)
			l.due, due = true, true
		default:
			l.renewed, l.left = time.Now(), time.Duration(secret.LeaseDuration)*time.Second
			log.Info("vault lease renewed", "path", path, "lease", l.id, "ttl", l.left.String())
			next = min(next, max(l.left*2/3, time.Second))
		}
	}
	if due {
		notify(vs.expiring)
	}
	return next
}

// Expiring is signalled when a lease is due to be replaced (Leaser).
func (vs *vaultStore) Expiring() <-chan struct{} { return vs.expiring }

// Leased is signalled when a read took a new lease (Leaser).
func (vs *vaultStore) Leased() <-chan struct{} { return vs.leased }

// notify wakes whoever waits on c, without waiting itself.
func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Rotate starts a round of reads: a lease due now is replaced at the
// first read of its path in the round, and its other keys come from that
// new read (Leaser).
func (vs *vaultStore) Rotate() {
	vs.lmu.Lock()
	defer vs.lmu.Unlock()
	for _, l := range vs.leases {
		if l.due {
			l.due, l.replace = false, true
		}
	}
}

// retire gives up a login token a new login replaced. A token that read
// a lease still in use is not revoked but left to expire, which a token
// replaced near its max TTL soon does: revoking it would revoke the
// lease, and drop the database user under the task before the new one is
// in its files. Its leases are read anew at once; Close revokes it, if
// it still lives when the sidecar stops.
func (vs *vaultStore) retire(ctx context.Context, token string, log logr.Logger) {
	vs.lmu.Lock()
	owns := 0
	for _, l := range vs.leases {
		if l.token == token {
			l.due = true
			owns++
		}
	}
	if owns > 0 {
		// The oldest have expired long since: each was replaced near
		// its end.
		vs.retired = append(vs.retired[max(0, len(vs.retired)-7):], token)
	}
	vs.lmu.Unlock()
	if owns == 0 {
		vs.revoke(ctx, token, log)
		return
	}
	log.Info("vault login replaced: the leases it read are read anew, and it is left to expire", "leases", owns)
	notify(vs.expiring)
}

// revoke revokes a login token that a new login replaced, if it still
// lives: one credential alive per pod, not one per renewal.
func (vs *vaultStore) revoke(ctx context.Context, token string, log logr.Logger) {
	c, err := vs.client.Clone()
	if err != nil {
		return
	}
	c.SetToken(token)
	if err := c.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
		log.V(1).Info("previous vault login token not revoked", "error", err.Error())
	}
}

// vaultEngineOK refuses a secret the agent cannot serve.
func vaultEngineOK(s agentapi.Secret, setDir string) error {
	switch {
	case s.Engine == "db" && s.EnvVar:
		return errors.New("vault engine db: an env var cannot follow the database user the sidecar replaces when its lease ends; use FILE")
	case s.Engine == "db" && (!s.Leased || setDir == ""):
		// The lease of dynamic credentials is a child of the token that
		// read them, which the fetch revokes when it ends: only the
		// sidecar, which keeps its own login and the leases it read, can
		// serve them (refresh on: --set-dir, and leased).
		return errors.New("vault engine db: dynamic database credentials need the sidecar that keeps their lease (inject.refresh), as a lease dies with the Vault token that read it")
	case s.Leased && s.Engine != "db":
		return fmt.Errorf("vault engine %q: not leased; only db is", s.Engine)
	}
	switch s.Engine {
	case "", "kv1", "kv2", "db":
		return nil
	}
	return fmt.Errorf("vault engine %q: unknown; kv1, kv2 or db", s.Engine)
}

// Close revokes the login token: the fetch is its only user, and a token
// left to its TTL is one more credential alive in Vault for every pod.
// The leases it read go with it (the fetch's database users are replaced
// by the sidecar's own before the task starts), as do those of tokens
// retired while their leases were being replaced.
func (vs *vaultStore) Close(ctx context.Context, log logr.Logger) {
	vs.lmu.Lock()
	for _, token := range vs.retired {
		vs.revoke(ctx, token, log)
	}
	vs.retired = nil
	vs.lmu.Unlock()
	if err := vs.client.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
		log.Error(vaultError("vault revoke the login token (auth/token/revoke-self)", err), "vault login token not revoked: it lives until its TTL ends")
		return
	}
	log.Info("vault login token revoked")
}

func cleanHTTPClient() *http.Client {
	return &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
}

func (vs *vaultStore) Read(ctx context.Context, s agentapi.Secret) ([]byte, error) {
	vs.mu.RLock()
	b, err := vs.read(ctx, s)
	token, stale, relogged := vs.client.Token(), time.Since(vs.loggedIn) > 5*time.Second, vs.relogged
	vs.mu.RUnlock()
	var se *vaultStatusError
	if err == nil || !errors.As(err, &se) || se.code != http.StatusForbidden || !stale || relogged {
		return b, err
	}
	// The sidecar's login token may have died while Vault was away: it
	// logs in again, once, and reads again.
	vs.mu.Lock()
	if vs.client.Token() == token { // no one else logged in meanwhile
		if lerr := vs.login(ctx); lerr != nil {
			vs.mu.Unlock()
			return nil, err
		}
		vs.relogged = true
		vs.retire(ctx, token, logr.Discard()) // most likely dead already
	}
	vs.mu.Unlock()
	vs.mu.RLock()
	defer vs.mu.RUnlock()
	return vs.read(ctx, s)
}

func (vs *vaultStore) read(ctx context.Context, s agentapi.Secret) ([]byte, error) {
	if s.Leased {
		return vs.readLeased(ctx, s)
	}
	path := s.ID
	if s.Engine == "kv2" {
		path = vs.kv2Path(ctx, path)
	}
	resp, err := vs.client.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return nil, vaultError("vault read "+path, err)
	}
	if resp == nil {
		return nil, Permanent(fmt.Errorf("vault read %s: not found", path))
	}
	data := resp.Data
	if s.Engine == "kv2" {
		d, ok := resp.Data["data"].(map[string]any)
		if !ok {
			return nil, Permanent(fmt.Errorf("vault read %s: no data: not a KV version 2 secret, or its current version is deleted", path))
		}
		data = d
	}
	return vaultValue(path, data, s.Key)
}

func vaultValue(path string, data map[string]any, key string) ([]byte, error) {
	v, ok := data[key]
	if !ok {
		return nil, Permanent(fmt.Errorf("vault read %s: the secret has no key %q", path, key))
	}
	if str, ok := v.(string); ok {
		return []byte(str), nil
	}
	return json.Marshal(v)
}

// readLeased reads a key of a dynamic secret from its lease: the path is
// read once (each read makes a new database user), and again only when
// the lease is replaced. The old lease is left to end on its own, so that
// a connection the task opened with it is not cut.
func (vs *vaultStore) readLeased(ctx context.Context, s agentapi.Secret) ([]byte, error) {
	vs.lmu.Lock()
	defer vs.lmu.Unlock()
	l := vs.leases[s.ID]
	if l == nil || l.replace {
		resp, err := vs.client.Logical().ReadWithContext(ctx, s.ID)
		if err != nil {
			return nil, vaultError("vault read "+s.ID, err)
		}
		if resp == nil {
			return nil, Permanent(fmt.Errorf("vault read %s: not found", s.ID))
		}
		if resp.LeaseID == "" {
			return nil, Permanent(fmt.Errorf("vault read %s: no lease in Vault's answer: groupVersion db is for a dynamic secret, such as the database engine's <mount>/creds/<role>", s.ID))
		}
		ttl := time.Duration(resp.LeaseDuration) * time.Second
		l = &vaultLease{id: resp.LeaseID, data: resp.Data, ttl: ttl, left: ttl, renewed: time.Now(),
			renewable: resp.Renewable, token: vs.client.Token()}
		vs.leases[s.ID] = l
		notify(vs.leased)
	}
	return vaultValue(s.ID, l.data, s.Key)
}

// kv2Path inserts data/ after the mount when the path lacks it, as Vault
// Agent's templates do, so that a Flyte group such as secret/my-app reads
// secret/data/my-app. The mount comes from sys/internal/ui/mounts, which
// every token may read; if that fails the path is used as it is.
func (vs *vaultStore) kv2Path(ctx context.Context, path string) string {
	resp, err := vs.client.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/"+path)
	if err != nil || resp == nil {
		return path
	}
	mount, _ := resp.Data["path"].(string)
	if mount == "" || !strings.HasPrefix(path, mount) {
		return path
	}
	if opts, _ := resp.Data["options"].(map[string]any); opts == nil || opts["version"] != "2" {
		return path
	}
	rest := strings.TrimPrefix(path, mount)
	if strings.HasPrefix(rest, "data/") {
		return path
	}
	return mount + "data/" + rest
}

// vaultError words a Vault error and says whether it is worth retrying:
// a 4xx other than 429 (denied, not found, bad request) is not. An answer
// of Vault's keeps its status (vaultStatusError).
func vaultError(what string, err error) error {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		msg := fmt.Sprintf("%s: HTTP %d: %s", what, re.StatusCode, strings.Join(re.Errors, "; "))
		if re.StatusCode >= 400 && re.StatusCode < 500 && re.StatusCode != http.StatusTooManyRequests && re.StatusCode != http.StatusRequestTimeout {
			if re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusBadRequest {
				msg += " (denied: check the Vault role's bound service accounts and policies)"
			}
			return Permanent(&vaultStatusError{code: re.StatusCode, msg: msg})
		}
		return &vaultStatusError{code: re.StatusCode, msg: msg}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// vaultStatusError is an answer of Vault's that refused a request.
type vaultStatusError struct {
	code int
	msg  string
}

func (e *vaultStatusError) Error() string { return e.msg }
