package inject

import (
	"fmt"
	"hash/fnv"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	jsonv2 "github.com/go-json-experiment/json"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/secctx/secctx/pkg/agentapi"
	"github.com/secctx/secctx/pkg/securityctx"
)

// What secctx adds to a pod with tokens (docs/tokens.md) or refreshed
// secrets (docs/refresh.md): the sidecar, from secctx's image, which keeps
// both, the exec wrapper's directory, and their volumes. InstallContainer
// is the name of the wrapper's installer of old, still reserved. The names
// start with secctx- so that they are seen to be secctx's; a pod that
// already has one of them is refused on the first pass.
const (
	SidecarContainer = "secctx-sidecar"
	InstallContainer = "secctx-bin"
	tokenVolumeName  = "secctx-tokens"
	binVolumeName    = "secctx-bin"
	// AgentPath is the agent binary in secctx's image.
	AgentPath = "/secctx-agent"
	// BinDir is where the fetch or the sidecar copies the agent, and where the
	// wrapped containers find it.
	BinDir = "/var/run/secctx/bin"
	// WrapperPath is the exec wrapper in the wrapped containers.
	WrapperPath = BinDir + "/secctx-agent"
	// clientsDir holds the client secrets, in the sidecar only.
	clientsDir = "/var/run/secctx/clients"
	// EnvCABundle carries inject.tokens.caBundle to the sidecar.
	EnvCABundle = "SECCTX_CA_BUNDLE"
)

// agentUser is the user the agent containers run as: distroless' nonroot.
const agentUser int64 = 65532

// agentPlan is what secctx's in-pod agent adds to a pod, worked out
// without the pod: the fetch init container (secrets from a store the
// kubelet cannot read), the sidecar (tokens, refreshed secrets), and the
// exec wrapper that both share, which the first of them installs. The env
// (the *_TOKEN_FILE paths) and the volumes every target mounts are in the
// secret plan, so that every target gets them with the same clash checks
// as secrets.
type agentPlan struct {
	names []string
	// sidecar is the sidecar (when there are tokens or refreshed secrets),
	// fetch the fetch container; nil without fetched secrets. Both are as
	// planned: variant makes each for a pod, with the user, the files'
	// mode and the wrapper's install.
	sidecar corev1.Container
	fetch   *corev1.Container
	// volumes are the binary's emptyDir, the client secrets' volumes and
	// the fetch's own; the tokens' emptyDir is in the secret plan.
	volumes []corev1.Volume
	// wrapper is the command prefix of a wrapped container: the agent's
	// exec, each env var from its file, then "--"; nil when nothing is to
	// be wrapped.
	wrapper []string
	// runtimeEnv are the names the wrapper sets, with their field.
	runtimeEnv [][2]string
	// required: the wrapper sets secrets (ENV_VAR from a fetched store),
	// so a target it cannot wrap is refused; tokens alone are in files too.
	required bool
	// bin is the wrapper's directory, envDir the fetched env values; both
	// are mounted in each wrapped container.
	bin, envDir secretVolume
	// variants are the fetch containers and refreshing sidecars made for
	// pods (variant), by variantKey; nVariants counts them.
	variants  sync.Map
	nVariants atomic.Int32
	// azure: the fetch reads Key Vault, as the application the pod's
	// account names (azureClientID).
	azure bool
	// refresh: the sidecar keeps the fetched FILE secrets fresh
	// (inject.refresh), and is made for each pod as the fetch is, with the
	// pod's interval; refreshed are those secrets' fields, leased those
	// of them that are leases.
	refresh           bool
	refreshed, leased []string
	// fetchSidecar is the sidecar that fetches too (inject.agent.fetchIn:
	// sidecar), and fetchWrapper the wrapper it needs on every target,
	// with the status it checks; nil otherwise.
	fetchSidecar *corev1.Container
	fetchWrapper []string
}

// encoded returns the JSON of an agent container the plan added, or nil.
// It is a method of a possibly nil plan: a pod with neither tokens nor
// fetched secrets has none.
func (tp *agentPlan) encoded(c *corev1.Container) []byte {
	switch {
	case tp == nil:
		return nil
	case c.Name == FetchContainer || c.Name == SidecarContainer:
		return tp.variantJSON(c)
	}
	return nil
}

// tokenEnvName is UPPER_SNAKE(name): a token name is a DNS label that
// starts with a letter, so this is a valid, distinct env var name.
func tokenEnvName(name string) string {
	return strings.ReplaceAll(strings.ToUpper(name), "-", "_")
}

// validateTokens refuses what the configured cluster or backend cannot do
// with tokens, and connections, which are not for pods.
func validateTokens(cfg Config, sc *securityctx.SecurityContext, fields []string) securityctx.ErrorList {
	var errs securityctx.ErrorList
	if sc.ConnectionRef != "" {
		errs = append(errs, securityctx.Invalid("connectionRef", sc.ConnectionRef, "not supported: connections are for Flyte agents, not pods"))
	}
	if len(sc.Tokens) == 0 {
		return errs
	}
	switch {
	case cfg.Agent.NativeSidecars == NativeSidecarsFalse:
		errs = append(errs, &securityctx.FieldError{Field: "tokens", Detail: "this cluster does not run native sidecars (init containers with restartPolicy: Always, " +
			"Kubernetes 1.29 and later), which keep tokens fresh; ask your platform team to upgrade, or remove tokens and read a client secret instead"})
	case cfg.Agent.Image == "":
		errs = append(errs, &securityctx.FieldError{Field: "tokens", Detail: "secctx is not configured for tokens: inject.agent.image, secctx's own image, is not set"})
	}
	for i := range sc.Tokens {
		c := sc.Tokens[i].Client
		if c == nil || c.ClientSecret == nil {
			continue
		}
		if b := cfg.StoreFor(c.ClientSecret.Group); b != BackendKubernetes {
			errs = append(errs, &securityctx.FieldError{Field: fmt.Sprintf("tokens[%d].client.clientSecret.group", i),
				Detail: "served by store " + b + ", but a token's client secret must be a Kubernetes Secret, which the token sidecar mounts: give it a group that inject.backends sends to kubernetes"})
		}
	}
	return append(errs, clientSecretsKept(sc, fields)...)
}

// clientSecretsKept refuses a secret that would give the task a token's
// client secret, which only the sidecar may read: a secrets[] entry for the
// same key of the same Kubernetes Secret, or for the whole Secret, and
// runAs.oauth2Client's secret when it is the same one. fields name where each
// secret was asked for.
func clientSecretsKept(sc *securityctx.SecurityContext, fields []string) securityctx.ErrorList {
	var errs securityctx.ErrorList
	// The Secret the kubelet would mount; a name it refuses is refused
	// elsewhere, naming the field.
	secretOf := func(s *securityctx.Secret) string {
		name, _ := secretName(s, "")
		return name
	}
	for i := range sc.Tokens {
		c := sc.Tokens[i].Client
		if c == nil || c.ClientSecret == nil || c.ClientSecret.Key == "" {
			continue
		}
		cs := c.ClientSecret
		what := fmt.Sprintf("tokens[%d].client.clientSecret (Secret %s key %s), which only the token sidecar may read", i, securityctx.Quote(secretOf(cs)), securityctx.Quote(cs.Key))
		for j := range sc.Secrets {
			if s := &sc.Secrets[j]; secretOf(s) == secretOf(cs) && (s.Key == cs.Key || s.Key == "") {
				errs = append(errs, &securityctx.FieldError{Field: fieldName(fields, j), Detail: "would give the task " + what})
			}
		}
		if id := sc.RunAs; id != nil && id.OAuth2Client != nil && id.OAuth2Client.ClientSecret != nil {
			if s := id.OAuth2Client.ClientSecret; secretOf(s) == secretOf(cs) && s.Key == cs.Key {
				errs = append(errs, &securityctx.FieldError{Field: clientField, Detail: "would give the task " + what})
			}
		}
	}
	return errs
}

// planAgent lays out the fetch and the tokens: the *_TOKEN_FILE env vars
// and the token volume go into p, for every target; the rest is returned.
func planAgent(cfg Config, tokens []securityctx.OAuth2TokenRequest, p *secretPlan) (*agentPlan, securityctx.ErrorList) {
	if len(tokens) == 0 && p.fetch == nil {
		return nil, nil
	}
	var errs securityctx.ErrorList
	tp := &agentPlan{wrapper: []string{WrapperPath, "exec"}, volumes: []corev1.Volume{noAPITokenVolume}}
	if fp := p.fetch; fp != nil {
		for _, w := range fp.wrapEnv {
			tp.runtimeEnv = append(tp.runtimeEnv, [2]string{w[0], w[2]})
			tp.wrapper = append(tp.wrapper, "--from-file="+w[0]+"="+w[1])
		}
		tp.required = len(fp.wrapEnv) > 0
		c, vols, err := buildFetch(cfg, fp, p)
		if err != nil {
			return nil, securityctx.ErrorList{&securityctx.FieldError{Field: "secrets", Detail: "encode: " + err.Error()}}
		}
		tp.fetch = &c
		tp.azure = slices.ContainsFunc(fp.secrets, func(s agentapi.Secret) bool { return s.Store == BackendAzure })
		if cfg.Refresh.IntervalSeconds > 0 && fp.files {
			tp.refresh = true
			// The first set in the layout the sidecar replaces whole.
			c.Args = slices.Insert(c.Args, len(c.Args)-1, "--set-dir="+cfg.SecretsDir)
		}
		tp.volumes = append(tp.volumes, vols...)
		if tp.required {
			i := slices.IndexFunc(vols, func(v corev1.Volume) bool { return v.Name == fetchedEnvVolumeName })
			tp.envDir = secretVolume{dir: EnvDir, by: "secrets", desc: "the values of ENV_VAR secrets", volume: vols[i]}
		}
	}
	if len(tokens) > 0 {
		errs = append(errs, tp.addTokens(cfg, tokens, p)...)
	}
	if tp.refresh {
		if err := tp.addRefresh(cfg, p); err != nil {
			return nil, securityctx.ErrorList{&securityctx.FieldError{Field: "secrets", Detail: "encode: " + err.Error()}}
		}
	}
	// A name the wrapper sets must not be an env var the plan sets too,
	// nor one it sets twice.
	for i, rt := range tp.runtimeEnv {
		if j := slices.IndexFunc(p.env, func(it envItem) bool { return it.env.Name == rt[0] }); j >= 0 {
			from := "the file the fetch writes"
			if strings.HasPrefix(rt[1], "tokens[") {
				from = "the token file"
			}
			errs = append(errs, &securityctx.FieldError{Field: rt[1], Detail: fmt.Sprintf(
				"env %s is set by the exec wrapper from %s, but %s sets it %s", rt[0], from, p.env[j].by, p.env[j].describe())})
		}
		if j := slices.IndexFunc(tp.runtimeEnv[:i], func(o [2]string) bool { return o[0] == rt[0] }); j >= 0 {
			errs = append(errs, &securityctx.FieldError{Field: rt[1], Detail: fmt.Sprintf(
				"env %s is set by the exec wrapper for %s too", rt[0], tp.runtimeEnv[j][1])})
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	// Not with a Google secret: its client is in the larger binary
	// (/secctx-fetch), which an init container keeps out of the pod's
	// life; with refresh the sidecar runs it anyway.
	gcp := p.fetch != nil && slices.ContainsFunc(p.fetch.secrets, func(s agentapi.Secret) bool { return s.Store == BackendGCP })
	if tp.fetch != nil && cfg.Agent.FetchIn == FetchInSidecar && (!gcp || tp.refresh) {
		tp.planFetchSidecar(cfg, gcp)
	}
	if len(tp.runtimeEnv) == 0 {
		tp.wrapper = nil
	} else {
		tp.wrapper = append(tp.wrapper, "--")
	}
	if tp.wrapper != nil || tp.fetchSidecar != nil {
		// The fetch, or else the sidecar, installs the wrapper as it
		// starts (variant): an init container of its own would cost the
		// pod a second (docs/performance.md).
		tp.bin = secretVolume{dir: BinDir, by: "secctx", desc: "the exec wrapper", volume: corev1.Volume{Name: binVolumeName,
			VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr(resource.MustParse("64Mi"))}}}}
		tp.volumes = append(tp.volumes, tp.bin.volume)
	}
	return tp, nil
}

// FetchStatusPath is the sidecar's status file when it fetches the
// secrets (inject.agent.fetchIn: sidecar) and has neither tokens nor
// refreshed secrets, whose directories hold it otherwise: beside the
// wrapper that reads it, in the bin volume, which every wrapped container
// mounts read-only.
const FetchStatusPath = BinDir + "/.status"

// planFetchSidecar lays out inject.agent.fetchIn: sidecar: the sidecar
// (the tokens' and refresh's when the pod has them, else one of its own)
// fetches what the fetch init container would, with its arguments, mounts
// and env; the task's containers start once its postStart hook sees the
// secrets written, and each is wrapped, so that when they could not be
// fetched, the wrapper fails it with the reason (exec --status). A pod
// whose containers cannot all be wrapped gets the fetch init container
// instead (applyAgent).
func (tp *agentPlan) planFetchSidecar(cfg Config, gcp bool) {
	var c corev1.Container
	// The status where the docs say it is: the tokens' .status, the set's
	// ..status, or beside the wrapper.
	status := FetchStatusPath
	switch {
	case tp.names != nil:
		status = path.Join(cfg.Tokens.Dir, ".status")
	case tp.refresh:
		status = path.Join(cfg.SecretsDir, "..status")
	}
	if tp.sidecar.Name != "" {
		c = *tp.sidecar.DeepCopy()
	} else {
		c = agentContainer(cfg, SidecarContainer, []string{"sidecar"}, nil)
		c.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
	}
	// The fetch's arguments, --secrets as --fetch-secrets; the store
	// settings the refresh has too are not given twice.
	var args []string
	for _, a := range tp.fetch.Args[1:] {
		if spec, ok := strings.CutPrefix(a, "--secrets="); ok {
			a = "--fetch-secrets=" + spec
		}
		if !slices.Contains(c.Args, a) {
			args = append(args, a)
		}
	}
	c.Args = slices.Concat(c.Args[:1], args, []string{"--status=" + status}, c.Args[1:])
	if gcp {
		c.Command = []string{FetchBinary}
	}
	last := len(c.VolumeMounts) - 1 // noAPITokenVolume stays last
	mounts := slices.Clone(c.VolumeMounts[:last])
	for _, m := range tp.fetch.VolumeMounts {
		if m.Name != noAPITokenVolumeName && !slices.ContainsFunc(mounts, func(h corev1.VolumeMount) bool { return h.Name == m.Name }) {
			mounts = append(mounts, m)
		}
	}
	c.VolumeMounts = append(mounts, c.VolumeMounts[last:]...)
	for _, e := range tp.fetch.Env {
		if findEnv(c.Env, e.Name) < 0 {
			c.Env = append(c.Env, e)
		}
	}
	// The hook outwaits the fetch's own timeout, after which the status
	// is ready and failed: the task's containers then start, and fail.
	c.Lifecycle = waitHook(int(fetchTimeout(cfg))+30, "--status="+status)
	tp.fetchSidecar = &c
	tp.fetchWrapper = slices.Concat(tp.wrapper[:2], []string{"--status=" + status}, tp.wrapper[2:], []string{"--"})
}

// addTokens lays the tokens out: the sidecar and its client secrets' volumes,
// and in p the *_TOKEN_FILE env vars and the token volume.
func (tp *agentPlan) addTokens(cfg Config, tokens []securityctx.OAuth2TokenRequest, p *secretPlan) securityctx.ErrorList {
	var errs securityctx.ErrorList
	var agentTokens []agentapi.Token
	sidecarMounts := []corev1.VolumeMount{{Name: tokenVolumeName, MountPath: cfg.Tokens.Dir}}
	for i := range tokens {
		t := &tokens[i]
		field := fmt.Sprintf("tokens[%d]", i)
		s := t.Client.ClientSecret
		name, nameErrs := secretName(s, field+".client.clientSecret")
		if len(nameErrs) > 0 {
			errs = append(errs, nameErrs...)
			continue
		}
		vol := clientVolumeName(name)
		if !slices.ContainsFunc(tp.volumes, func(v corev1.Volume) bool { return v.Name == vol }) {
			tp.volumes = append(tp.volumes, corev1.Volume{Name: vol, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: name, DefaultMode: ptr(secretDefaultMode)}}})
			sidecarMounts = append(sidecarMounts, corev1.VolumeMount{Name: vol, MountPath: path.Join(clientsDir, vol), ReadOnly: true})
		}
		v := &tp.volumes[slices.IndexFunc(tp.volumes, func(v corev1.Volume) bool { return v.Name == vol })]
		if !slices.ContainsFunc(v.Secret.Items, func(k corev1.KeyToPath) bool { return k.Key == s.Key }) {
			v.Secret.Items = append(v.Secret.Items, corev1.KeyToPath{Key: s.Key, Path: s.Key})
		}
		file := path.Join(cfg.Tokens.Dir, t.Name)
		env := tokenEnvName(t.Name)
		if e := p.addEnv(envItem{env: corev1.EnvVar{Name: env + "_TOKEN_FILE", Value: file}, by: field}, field+".name"); e != nil {
			errs = append(errs, e)
		}
		tp.runtimeEnv = append(tp.runtimeEnv, [2]string{env + "_TOKEN", field + ".name"})
		tp.wrapper = append(tp.wrapper, "--from-file="+env+"_TOKEN="+file)
		tp.names = append(tp.names, t.Name)
		agentTokens = append(agentTokens, agentapi.Token{
			Name: t.Name, ClientID: t.Client.ClientID, ClientSecretFile: path.Join(clientsDir, vol, s.Key),
			TokenEndpoint: t.TokenEndpoint, DiscoveryEndpoint: t.IdpDiscoveryEndpoint, AuthStyle: authStyle(cfg),
		})
		p.refs = append(p.refs, SecretRef{Field: field + ".client.clientSecret", Secret: name, Key: s.Key})
	}
	if len(errs) > 0 {
		return errs
	}
	spec, err := jsonv2.Marshal(agentTokens)
	if err != nil {
		return securityctx.ErrorList{&securityctx.FieldError{Field: "tokens", Detail: "encode: " + err.Error()}}
	}
	args := []string{"sidecar", "--dir=" + cfg.Tokens.Dir}
	if n := cfg.Tokens.MinRefreshSeconds; n > 0 {
		args = append(args, "--min-refresh="+strconv.Itoa(int(n))+"s")
	}
	for _, h := range cfg.Tokens.HTTPHosts {
		args = append(args, "--http-host="+h)
	}
	args = append(args, "--tokens="+string(spec))
	tp.sidecar = agentContainer(cfg, SidecarContainer, args, sidecarMounts)
	tp.sidecar.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
	// The task's containers start once this hook returns: every token is
	// written (and the wrapper installed). A hook rather than a startup
	// probe: the kubelet runs it as the sidecar starts and starts the next
	// container as soon as it returns, where a probe would wait for its
	// next period, up to a second (docs/performance.md). When the tokens
	// do not come in 30 s, the hook fails and the kubelet restarts the
	// sidecar, which leaves what is wrong as its termination message.
	tp.sidecar.Lifecycle = waitHook(30, "--dir="+cfg.Tokens.Dir)
	if cfg.Tokens.CABundle != "" {
		tp.sidecar.Env = []corev1.EnvVar{{Name: EnvCABundle, Value: cfg.Tokens.CABundle}}
	}
	// The token files: in memory, never on the node's disk. Each token may
	// be as large as the sidecar writes (agentapi.MaxTokenBytes), and is
	// written through a temporary copy beside it; so is the status file.
	size := resource.NewQuantity(int64(2*len(tokens)+2)*agentapi.MaxTokenBytes, resource.BinarySI)
	p.volumes = append(p.volumes, &secretVolume{dir: cfg.Tokens.Dir, by: "tokens", desc: "the OAuth2 tokens", volume: corev1.Volume{
		Name: tokenVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: size}},
	}})
	return nil
}

// addRefresh makes the sidecar keep the fetched FILE secrets fresh: it
// reads them from their stores as the fetch does, so it gets the fetch's
// store settings, login tokens and web identity, and the fetched volume,
// which it writes. It is the token sidecar when there are tokens, else one
// of its own; either way it is made for each pod (variant), as the fetch
// is, since it writes the files as the fetch's user with its mode.
func (tp *agentPlan) addRefresh(cfg Config, p *secretPlan) error {
	fp := p.fetch
	var files []agentapi.Secret
	for _, s := range fp.secrets {
		if !s.EnvVar {
			files = append(files, s)
			tp.refreshed = append(tp.refreshed, s.Field)
			if s.Leased {
				tp.leased = append(tp.leased, s.Field)
			}
		}
	}
	spec, err := jsonv2.Marshal(files)
	if err != nil {
		return err
	}
	// A refresh writes the new set beside the old before it removes it:
	// room for two sets of the largest values the fetch writes.
	if size := resource.NewQuantity(int64(2*len(files)+1)*agentapi.MaxSecretBytes, resource.BinarySI); size.Cmp(resource.MustParse("64Mi")) > 0 {
		for _, v := range p.volumes {
			if v.volume.Name == fetchedVolumeName {
				v.volume.EmptyDir.SizeLimit = size
			}
		}
	}
	if tp.names == nil {
		tp.sidecar = agentContainer(cfg, SidecarContainer, []string{"sidecar"}, nil)
		tp.sidecar.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
	}
	// Of several stores, only those it refreshes: the sidecar lives as
	// long as the pod, and needs no login for a store whose secrets are
	// all ENV_VAR values, read once by the fetch.
	args, dropEnv, dropMounts := fp.args, map[string]bool{}, map[string]bool{}
	if len(fp.parts) > 0 {
		args = nil
		for _, part := range fp.parts {
			if slices.ContainsFunc(files, func(s agentapi.Secret) bool { return s.Store == part.store }) {
				args = append(args, part.args...)
				continue
			}
			for _, e := range part.env {
				dropEnv[e.Name] = true
			}
			for _, m := range part.mounts {
				dropMounts[m.Name] = true
			}
		}
	}
	c := &tp.sidecar
	c.Args = slices.Concat(c.Args, args, []string{
		"--set-dir=" + cfg.SecretsDir,
		"--refresh-jitter=" + strconv.FormatFloat(cfg.Refresh.jitter(), 'g', -1, 64),
		"--secrets=" + string(spec),
	})
	if c.Lifecycle == nil && slices.ContainsFunc(files, func(s agentapi.Secret) bool { return s.Leased }) {
		// The fetch's leases end with its login: the task starts once
		// the sidecar has written its own (as with tokens, a hook).
		c.Lifecycle = waitHook(30, "--set-dir="+cfg.SecretsDir)
	}
	if slices.ContainsFunc(files, func(s agentapi.Secret) bool { return s.Store == BackendGCP }) {
		// Secret Manager's client is in secctx-fetch alone.
		c.Command = []string{FetchBinary}
	}
	// The fetch's mounts but the ENV_VAR values', which are never
	// refreshed: the fetched volume, written, and the store's own.
	last := len(c.VolumeMounts) - 1 // noAPITokenVolume stays last
	mounts := []corev1.VolumeMount{{Name: fetchedVolumeName, MountPath: cfg.SecretsDir}}
	for _, m := range tp.fetch.VolumeMounts {
		if m.Name != fetchedVolumeName && m.Name != fetchedEnvVolumeName && m.Name != noAPITokenVolumeName && !dropMounts[m.Name] {
			mounts = append(mounts, m)
		}
	}
	c.VolumeMounts = slices.Concat(c.VolumeMounts[:last], mounts, c.VolumeMounts[last:])
	for _, e := range tp.fetch.Env {
		if !dropEnv[e.Name] {
			c.Env = append(c.Env, e)
		}
	}
	return nil
}

// waitHook is the sidecar's postStart hook: secctx-agent sidecar --wait,
// for at most seconds, on the status that where (--dir, --set-dir or
// --status) names. The kubelet starts the pod's next container once it
// returns.
func waitHook(seconds int, where string) *corev1.Lifecycle {
	return &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
		Command: []string{AgentPath, "sidecar", "--wait", "--wait-timeout=" + strconv.Itoa(seconds) + "s", where}}}}
}

// authStyle is what the sidecar is told of inject.tokens.authStyle: empty
// for the default, header.
func authStyle(cfg Config) string {
	if cfg.Tokens.AuthStyle == agentapi.AuthStyleBody {
		return agentapi.AuthStyleBody
	}
	return ""
}

// checkAgentImage: a store read in the pod needs secctx's image.
func checkAgentImage(c Config, what string) error {
	if c.Agent.Image == "" {
		return fmt.Errorf("inject.agent.image: required with %s: the fetch init container runs secctx's own image", what)
	}
	return nil
}

// noAPITokenVolume is an empty directory mounted, read-only, at the API
// token's path in every agent container. The agent needs no access to the
// Kubernetes API, so it gets no token; and the ServiceAccount admission
// plugin, which the API server runs again after a webhook changed the pod,
// mounts the pod's token only in containers that have nothing at that path:
// without this mount it would add one to secctx's containers, and that
// change would make the API server call secctx again for every such pod.
var noAPITokenVolume = corev1.Volume{Name: noAPITokenVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}

const noAPITokenVolumeName = "secctx-no-api-token"

// agentContainer is a container of secctx's image, locked down: the agent
// needs no privilege, no writable root, no capability and no API token.
func agentContainer(cfg Config, name string, args []string, mounts []corev1.VolumeMount) corev1.Container {
	mounts = append(slices.Clip(mounts), corev1.VolumeMount{Name: noAPITokenVolumeName, MountPath: tokenMountPath, ReadOnly: true})
	return corev1.Container{
		Name:                     name,
		Image:                    cfg.Agent.Image,
		ImagePullPolicy:          cfg.Agent.ImagePullPolicy,
		Command:                  []string{AgentPath},
		Args:                     args,
		Resources:                *cfg.Agent.Resources.DeepCopy(),
		VolumeMounts:             mounts,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(agentUser),
			RunAsGroup:               ptr(agentUser),
			RunAsNonRoot:             ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// clientVolumeName names the volume of a client secret's Secret:
// secctx-client-<name>, or shortened with a hash.
func clientVolumeName(secret string) string {
	name := "secctx-client-" + secret
	if len(name) <= validation.DNS1123LabelMaxLength && !strings.Contains(secret, ".") {
		return name
	}
	h := fnv.New32a()
	h.Write([]byte(secret))
	suffix := fmt.Sprintf("-%08x", h.Sum32())
	name = strings.ReplaceAll(name, ".", "-")
	if max := validation.DNS1123LabelMaxLength - len(suffix); len(name) > max {
		name = strings.TrimRight(name[:max], "-")
	}
	return name + suffix
}

// isAgentContainer: a container secctx adds, never a target.
func isAgentContainer(name string) bool {
	return name == SidecarContainer || name == InstallContainer || name == FetchContainer
}

// applyAgent adds the agent containers to out, and the wrapper to every
// target with an explicit command. A target without one cannot be wrapped:
// with tokens alone it gets the token files only, and a note says so; when
// the wrapper sets secrets, the pod is refused. On a reinvocation the agent
// containers must be secctx's, as it added them.
func applyAgent(out *corev1.Pod, tgts []*corev1.Container, tp *agentPlan, azureClient string, refreshSeconds int32) (notes, clashes []string) {
	q := securityctx.Quote
	var bare []string
	wrapped := false
	// The sidecar fetches (inject.agent.fetchIn: sidecar) when every
	// target can be wrapped: a target it cannot wrap would start even
	// though the secrets could not be fetched.
	wrapper, fetchSidecar := tp.wrapper, false
	if tp.fetchSidecar != nil {
		if why := cannotFetchInSidecar(out, tgts); why == "" {
			wrapper, fetchSidecar = tp.fetchWrapper, true
		} else {
			notes = append(notes, why+": the secrets are fetched by an init container instead of the sidecar (inject.agent.fetchIn), which costs the pod about half a second")
		}
	}
	for _, c := range tgts {
		if wrapper == nil {
			break
		}
		for _, rt := range tp.runtimeEnv {
			if i := findEnv(c.Env, rt[0]); i >= 0 {
				clashes = append(clashes, fmt.Sprintf("container %s already sets env %s %s; the exec wrapper would set it from the file of %s",
					q(c.Name), rt[0], describeEnv(c.Env[i]), rt[1]))
			}
		}
		switch {
		case len(c.Command) == 0:
			bare = append(bare, c.Name)
			continue
		case c.Command[0] == WrapperPath:
			if !hasPrefix(c.Command, wrapper) {
				clashes = append(clashes, fmt.Sprintf("container %s runs %s with other settings than %s asks for; remove the wrapper from its command",
					q(c.Name), WrapperPath, securityctx.AnnotationSecurityContext))
				continue
			}
		default:
			c.Command = slices.Concat(wrapper, c.Command)
		}
		wrapped = true
		clashes = append(clashes, mountInto(c, &tp.bin, out.Spec.Volumes, nil)...)
		if tp.required {
			clashes = append(clashes, mountInto(c, &tp.envDir, out.Spec.Volumes, nil)...)
		}
	}
	names := securityctx.Shorten(strings.Join(bare, ", "))
	switch {
	case len(bare) == 0:
	case tp.required:
		clashes = append(clashes, fmt.Sprintf("container %s has no explicit command, so the exec wrapper cannot set %s before it starts: "+
			"set its command (the image's entrypoint) in the pod, or ask for those secrets with mountRequirement FILE",
			names, securityctx.Shorten(strings.Join(runtimeEnvNames(tp), ", "))))
	default:
		notes = append(notes, fmt.Sprintf("container %s has no explicit command, so the exec wrapper cannot set %s: it reads the token from the file in %s instead",
			names, strings.Join(runtimeEnvNames(tp), ", "), "*_TOKEN_FILE"))
	}

	// The agent containers go first: the fetch, then the sidecar; every
	// other init container may be a target and need their files. The
	// first of them installs the wrapper.
	var add []corev1.Container
	key := keyFor(out, tgts, azureClient)
	if tp.fetch != nil && !fetchSidecar {
		add = append(add, tp.variant(variantKey{name: FetchContainer, fetchKey: key, install: wrapped}, tp.fetch).c)
	}
	switch {
	case fetchSidecar:
		// As the fetch's user, with its mode: it writes the files. It
		// holds the stores' logins for the pod's life, which a shared
		// process namespace would show the task's containers (as
		// secctx's own user 65532, too: distroless images' nonroot).
		if out.Spec.ShareProcessNamespace != nil && *out.Spec.ShareProcessNamespace {
			clashes = append(clashes, "spec.shareProcessNamespace: with inject.agent.fetchIn: sidecar the sidecar holds the stores' logins for the pod's life, "+
				"and a shared process namespace would let the pod's containers read them through /proc; set shareProcessNamespace to false, or inject.agent.fetchIn to init")
		}
		add = append(add, tp.variant(variantKey{name: SidecarContainer, fetchKey: key, install: true, refresh: refreshSeconds, fetch: true}, tp.fetchSidecar).c)
	case tp.refresh:
		if key.uid != 0 && out.Spec.ShareProcessNamespace != nil && *out.Spec.ShareProcessNamespace {
			// The sidecar then runs as the targets' user (its files are
			// 0400 theirs), and in one process namespace they could read
			// its credentials through /proc.
			clashes = append(clashes, fmt.Sprintf("spec.shareProcessNamespace: with inject.refresh the sidecar runs as the containers' user %d, "+
				"and a shared process namespace would let them read its store credentials; set shareProcessNamespace to false", key.uid))
		}
		add = append(add, tp.variant(variantKey{name: SidecarContainer, fetchKey: key, refresh: refreshSeconds}, &tp.sidecar).c)
	case tp.names != nil:
		// The tokens alone: secctx's own user, whatever the pod's.
		add = append(add, tp.variant(variantKey{name: SidecarContainer, install: wrapped && tp.fetch == nil}, &tp.sidecar).c)
	}
	var missing []corev1.Container
	for _, want := range add {
		i := slices.IndexFunc(out.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == want.Name })
		if i < 0 {
			missing = append(missing, *want.DeepCopy()) // the plan is shared (prepare)
			continue
		}
		// Only on a reinvocation (reservedNames refuses the name on a
		// first pass), and from a whole pod (hasAgentParts): the container
		// must be exactly what secctx wrote, since it holds the client
		// secrets, the store's login or the binary every wrapped container
		// runs.
		if diff := agentDiff(&out.Spec.InitContainers[i], &want); len(diff) > 0 {
			clashes = append(clashes, fmt.Sprintf("the pod has an init container named %s that is not the %s secctx writes (%s differ); remove it or rename it",
				want.Name, describeAgent(want.Name), strings.Join(diff, ", ")))
		}
	}
	clashes = append(clashes, unplannedAgents(out, add)...)
	if len(missing) > 0 {
		out.Spec.InitContainers = slices.Concat(missing, out.Spec.InitContainers)
	}
	_, reinvoked := out.Annotations[securityctx.AnnotationStatus]
	for i := range tp.volumes {
		// The plan is shared (prepare): the pod gets a copy.
		if v := &tp.volumes[i]; (v.Name != binVolumeName || wrapped) && addVolume(out, *v.DeepCopy(), reinvoked) != nil {
			clashes = append(clashes, fmt.Sprintf("the pod already has a volume named %s; secctx needs that name for the %s", q(v.Name), describeAgent(v.Name)))
		}
	}
	return notes, clashes
}

// cannotFetchInSidecar says why the sidecar cannot fetch out's secrets
// (inject.agent.fetchIn: sidecar), or "" when it can: every regular
// container must be a target with an explicit command, so that each is
// wrapped and fails when the secrets could not be fetched; a container
// left out would run on, and keep a pod of restartPolicy Never from
// failing. A pod whose sidecar already fetches (a reinvocation) keeps it.
func cannotFetchInSidecar(out *corev1.Pod, tgts []*corev1.Container) string {
	for _, c := range out.Spec.InitContainers {
		if c.Name == SidecarContainer && slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--fetch-secrets=") }) {
			return ""
		}
	}
	var bare, left []string
	for i := range out.Spec.Containers {
		c := &out.Spec.Containers[i]
		switch {
		case !slices.Contains(tgts, c):
			left = append(left, c.Name)
		case len(c.Command) == 0:
			bare = append(bare, c.Name)
		}
	}
	switch {
	case len(left) > 0:
		return fmt.Sprintf("container %s gets no secrets, and would run on if they could not be fetched", securityctx.Shorten(strings.Join(left, ", ")))
	case len(bare) > 0:
		return fmt.Sprintf("container %s has no explicit command (Flyte's Python tasks give args alone), so the exec wrapper cannot fail it when the secrets cannot be fetched",
			securityctx.Shorten(strings.Join(bare, ", ")))
	}
	return ""
}

// unplannedAgents refuses an init container with the name of one of
// secctx's that secctx does not add to this pod (add): on a reinvocation it
// is not secctx's.
func unplannedAgents(out *corev1.Pod, add []corev1.Container) []string {
	var clashes []string
	for i := range out.Spec.InitContainers {
		n := out.Spec.InitContainers[i].Name
		if isAgentContainer(n) && !slices.ContainsFunc(add, func(c corev1.Container) bool { return c.Name == n }) {
			clashes = append(clashes, fmt.Sprintf("the pod has an init container named %s, a name secctx reserves for its %s, which this pod does not get; remove it or rename it",
				n, describeAgent(n)))
		}
	}
	return clashes
}

// agentDiff names the fields (as in the pod's JSON) in which have, an agent
// container of the pod, differs from want, the one secctx writes. What the
// API server's own admission may do to every container is not a
// difference: the defaults it fills in, and the resources and pull policy
// that LimitRanger and AlwaysPullImages set. (The ServiceAccount plugin
// leaves secctx's containers alone: they have a mount at the API token's
// path, noAPITokenVolume.) Everything else, the securityContext, the
// mounts, the env, the command, the probes, must be what secctx wrote.
func agentDiff(have, want *corev1.Container) []string {
	h, w := asStored(*have), asStored(*want)
	if equality.Semantic.DeepEqual(h, w) {
		return nil
	}
	var diff []string
	hv, wv := reflect.ValueOf(h), reflect.ValueOf(w)
	for i := range hv.NumField() {
		if !equality.Semantic.DeepEqual(hv.Field(i).Interface(), wv.Field(i).Interface()) {
			name, _, _ := strings.Cut(hv.Type().Field(i).Tag.Get("json"), ",")
			diff = append(diff, name)
		}
	}
	return diff
}

// asStored is c with what admission may set on it filled in or left out:
// a container's termination message, the resources and the pull policy.
func asStored(c corev1.Container) corev1.Container {
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = corev1.TerminationMessagePathDefault
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	c.ImagePullPolicy = ""
	c.Resources = corev1.ResourceRequirements{}
	return c
}

func describeAgent(name string) string {
	switch name {
	case SidecarContainer:
		return "sidecar (tokens, refreshed and fetched secrets)"
	case InstallContainer: // and binVolumeName
		return "exec wrapper"
	case FetchContainer:
		return "secret fetcher (an init container)"
	case fetchedEnvVolumeName:
		return "values of ENV_VAR secrets"
	case fetchedVolumeName:
		return "secrets the fetch writes"
	case tokenVolumeName:
		return "OAuth2 tokens"
	case vaultTokenVolumeName:
		return "Vault login token"
	case gcpTokenVolumeName:
		return "token the fetch exchanges at Google STS"
	case azureTokenVolumeName:
		return "token the fetch presents to Entra"
	case noAPITokenVolumeName:
		return "empty directory that keeps the API token from its containers"
	}
	return "client secret of a token"
}

func runtimeEnvNames(tp *agentPlan) []string {
	names := make([]string, len(tp.runtimeEnv))
	for i, rt := range tp.runtimeEnv {
		names[i] = rt[0]
	}
	return names
}

func hasPrefix(s, prefix []string) bool {
	return len(s) >= len(prefix) && slices.Equal(s[:len(prefix)], prefix)
}
