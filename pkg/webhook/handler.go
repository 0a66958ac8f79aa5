package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/secctx/secctx/pkg/inject"
	"github.com/secctx/secctx/pkg/securityctx"
)

// MutatePath is where the pod webhook is served.
const MutatePath = "/mutate-v1-pod"

// maxRequestBytes bounds a request body: the API server's own limit on an
// object is 3 MiB, and controller-runtime allows 7 MiB for a review.
const maxRequestBytes = 7 << 20

// The decisions counted in secctx_admission_decisions_total.
const (
	DecisionMutated   = "mutated"
	DecisionUnchanged = "unchanged"
	DecisionDenied    = "denied"
	DecisionError     = "error"
)

// The reasons of secctx_admission_decisions_total and the audit line: why
// the decision was taken. A bounded set, so that the metric's series are.
const (
	ReasonInjected    = "injected"     // mutated
	ReasonPolicyAudit = "policy-audit" // admitted; enforce mode would deny
	ReasonNoChange    = "no-change"    // nothing to add: not opted in, or already injected
	ReasonNotAPod     = "not-a-pod-create"
	ReasonInvalid     = "invalid" // the request or a clash (pkg/inject)
	ReasonPolicy      = "policy"  // no SecurityContextPolicy allows it
	// A Secret or key the pod refers to does not exist (referenceChecks):
	// denied, or admitted with a warning.
	ReasonMissingReference = "missing-reference"
	ReasonInternal         = "internal" // a lookup failed, or a panic
	ReasonBadReview        = "bad-review"
)

var decisionReasons = [][2]string{
	{DecisionMutated, ReasonInjected}, {DecisionMutated, ReasonPolicyAudit}, {DecisionMutated, ReasonMissingReference},
	{DecisionUnchanged, ReasonNoChange}, {DecisionUnchanged, ReasonNotAPod}, {DecisionUnchanged, ReasonPolicyAudit},
	{DecisionDenied, ReasonInvalid}, {DecisionDenied, ReasonPolicy}, {DecisionDenied, ReasonMissingReference},
	{DecisionError, ReasonInternal}, {DecisionError, ReasonBadReview},
}

// PodMutator serves AdmissionReview requests for pods. It reads the review and
// the pod in one pass and answers with the targeted JSON patch operations that
// pkg/inject computes. controller-runtime's admission.Webhook would decode the
// review through the API machinery's universal deserializer and then the pod
// again, which the benchmarks in docs/performance-notes.md show to cost more than
// all of secctx's own work; the server, TLS, certificate reloading and the
// request metrics are still controller-runtime's.
type PodMutator struct {
	injector  *inject.Injector
	log       logr.Logger
	audit     logr.Logger
	decisions *prometheus.CounterVec
	// counted holds decisions' counters, looked up once: WithLabelValues
	// hashes the label values and takes a lock on every call.
	counted map[[2]string]prometheus.Counter
	// secrets counts the injected secrets by store and mount type,
	// policyDenials the pods no policy allowed by
	// policy, duration the time to answer.
	secrets       map[storeMount]prometheus.Counter
	policyDenials *prometheus.CounterVec
	duration      prometheus.Histogram
	// policies, when not nil, are checked in policyMode (WithPolicy).
	policies   PolicySource
	policyMode string
	// secretKeys, when not nil, checks the pod's Secret references in
	// refMode (WithReferenceChecks).
	secretKeys SecretKeys
	refMode    string
}

// NewPodMutator registers its metrics with reg.
func NewPodMutator(injector *inject.Injector, log logr.Logger, reg prometheus.Registerer) (*PodMutator, error) {
	m := &PodMutator{
		injector: injector,
		log:      log,
		audit:    log.WithName("audit"),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secctx_admission_decisions_total",
			Help: "Pod admission requests by decision (mutated, unchanged, denied, error) and reason.",
		}, []string{"decision", "reason"}),
		policyDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secctx_policy_denials_total",
			Help: "Pods that no SecurityContextPolicy allowed, by mode (enforce: denied; audit: admitted) and policy checked (none: no policy selected the namespace).",
		}, []string{"mode", "policy"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "secctx_admission_duration_seconds",
			Help:    "Time to answer an AdmissionReview, from its body read to its answer encoded.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3},
		}),
	}
	secrets := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "secctx_injected_secrets_total",
		Help: "Secrets injected into admitted pods, by backend and requested mount type.",
	}, []string{"backend", "mount"})
	for _, c := range []prometheus.Collector{m.decisions, m.policyDenials, m.duration, secrets} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	m.counted = map[[2]string]prometheus.Counter{}
	for _, dr := range decisionReasons {
		m.counted[dr] = m.decisions.WithLabelValues(dr[0], dr[1])
	}
	m.secrets = map[storeMount]prometheus.Counter{}
	for _, st := range injector.Stores() {
		for _, mt := range []securityctx.MountType{securityctx.MountAny, securityctx.MountEnvVar, securityctx.MountFile} {
			m.secrets[storeMount{st, mt}] = secrets.WithLabelValues(st, mt.String())
		}
	}
	return m, nil
}

// reviewIn is the part of an AdmissionReview (v1 or v1beta1) that secctx
// reads; the pod is decoded in the same pass. Both levels have decoders
// written out (review.go).
type reviewIn struct {
	APIVersion string     `json:"apiVersion"`
	Request    *requestIn `json:"request"`
}

type requestIn struct {
	UID         types.UID               `json:"uid"`
	Kind        metav1.GroupVersionKind `json:"kind"`
	SubResource string                  `json:"subResource"`
	Name        string                  `json:"name"`
	Namespace   string                  `json:"namespace"`
	Operation   admissionv1.Operation   `json:"operation"`
	Object      *inject.PodView         `json:"object"`
}

// reviewOut is an AdmissionReview response, field for field as in
// k8s.io/api/admission/v1.
type reviewOut struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Response   responseOut `json:"response"`
}

type responseOut struct {
	UID       types.UID `json:"uid"`
	Allowed   bool      `json:"allowed"`
	Status    *status   `json:"status,omitempty"`
	Patch     []byte    `json:"patch,omitempty"`
	PatchType string    `json:"patchType,omitempty"`
	Warnings  []string  `json:"warnings,omitempty"`
}

type status struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Reason  string `json:"reason,omitempty"`
	Code    int32  `json:"code"`
}

// reviewDecodeOptions: the API server writes the review from a typed object,
// so it never repeats a name; not tracking names in every object saves a
// tenth of decoding. A repeated name would take the last value, as
// encoding/json does.
var reviewDecodeOptions = jsontext.AllowDuplicateNames(true)

// bufPool holds request and response buffers, patchPool patch buffers:
// allocation per request is what sets how often the garbage collector runs,
// which was a fifth of secctx's CPU under load (docs/performance-notes.md).
var (
	bufPool   = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	patchPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
)

func (m *PodMutator) count(decision, reason string) { m.counted[[2]string{decision, reason}].Inc() }

// ServeHTTP implements http.Handler. The review is read and answered in
// answer, so that its frame (the decoded review, the response being built)
// is off the stack when the answer is written: net/http's header writing is
// the deepest point of a request, and with that frame on top of it every
// connection's goroutine outgrew its 8 KB stack again after each garbage
// collection shrank it (copying stacks was 2.6% of secctx's CPU under load).
func (m *PodMutator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		http.Error(w, "content type "+securityctx.Quote(ct)+": want application/json", http.StatusUnsupportedMediaType)
		return
	}
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxRequestBytes)); err != nil {
		m.count(DecisionError, ReasonBadReview)
		http.Error(w, "read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	b, code, msg := m.answer(r.Context(), buf.Bytes())
	if code != 0 {
		http.Error(w, msg, code)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	// Without a length, net/http sends a response over 2 KB chunked.
	h.Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
	if cap(b) > buf.Cap() {
		*buf = *bytes.NewBuffer(b[:0]) // the pool keeps the larger array
	}
}

// answer decodes the AdmissionReview in body and returns the response
// review, written over body's array once the review is answered (nothing
// reads body after that). A review that cannot be answered gives an HTTP
// status code and its message.
func (m *PodMutator) answer(ctx context.Context, body []byte) ([]byte, int, string) {
	var review reviewIn
	if err := jsonv2.Unmarshal(body, &review, reviewDecodeOptions); err != nil || review.Request == nil {
		if err == nil {
			err = errors.New("no request in the AdmissionReview")
		}
		m.count(DecisionError, ReasonBadReview)
		// A decoding error can quote the input; the log line and the answer
		// hold at most a few hundred bytes of it.
		msg := securityctx.Shorten(err.Error())
		m.log.Info("bad admission review", "error", msg)
		return nil, http.StatusBadRequest, "decode AdmissionReview: " + msg
	}
	out := reviewOut{APIVersion: review.APIVersion, Kind: "AdmissionReview"}
	if out.APIVersion == "" {
		out.APIVersion = admissionv1.SchemeGroupVersion.String()
	}
	pb := patchPool.Get().(*[]byte)
	defer patchPool.Put(pb)
	out.Response = m.review(ctx, review.Request, (*pb)[:0], func() (*inject.AgentView, error) { return agentView(body) })
	out.Response.UID = review.Request.UID
	if p := out.Response.Patch; cap(p) > cap(*pb) {
		*pb = p[:0] // the pool keeps the larger array
	}
	b, err := out.appendJSON(body[:0])
	if err != nil {
		m.log.Error(err, "encode admission response")
		return nil, http.StatusInternalServerError, "encode response"
	}
	return b, 0, ""
}

// agentView decodes the pod of the review in body again, its init
// containers and volumes whole, for the few pods whose view is not enough
// (inject.ErrFullPodNeeded).
func agentView(body []byte) (*inject.AgentView, error) {
	var review struct {
		Request *struct {
			Object *inject.AgentView `json:"object"`
		} `json:"request"`
	}
	if err := jsonv2.Unmarshal(body, &review, reviewDecodeOptions); err != nil {
		return nil, fmt.Errorf("decode pod: %s", securityctx.Shorten(err.Error()))
	}
	if review.Request == nil || review.Request.Object == nil {
		return nil, errors.New("decode pod: no object in the request")
	}
	return review.Request.Object, nil
}

// appendJSON writes the review as encoding/json would write the same
// fields. It is written out because the reflection-based encoder was a
// twentieth of a whole request; a test checks that both agree.
func (o *reviewOut) appendJSON(b []byte) ([]byte, error) {
	r := &o.Response
	var err error
	b = append(b, `{"apiVersion":`...)
	b, err = jsontext.AppendQuote(b, o.APIVersion)
	b = append(b, `,"kind":`...)
	b, err = appendQuote(b, o.Kind, err)
	b = append(b, `,"response":{"uid":`...)
	b, err = appendQuote(b, string(r.UID), err)
	b = append(b, `,"allowed":`...)
	b = strconv.AppendBool(b, r.Allowed)
	if s := r.Status; s != nil {
		b = append(b, `,"status":{"status":`...)
		b, err = appendQuote(b, s.Status, err)
		b = append(b, `,"message":`...)
		b, err = appendQuote(b, s.Message, err)
		if s.Reason != "" {
			b = append(b, `,"reason":`...)
			b, err = appendQuote(b, s.Reason, err)
		}
		b = append(b, `,"code":`...)
		b = strconv.AppendInt(b, int64(s.Code), 10)
		b = append(b, '}')
	}
	if len(r.Patch) > 0 {
		b = append(b, `,"patch":"`...)
		b = base64.StdEncoding.AppendEncode(b, r.Patch)
		b = append(b, '"')
	}
	if r.PatchType != "" {
		b = append(b, `,"patchType":`...)
		b, err = appendQuote(b, r.PatchType, err)
	}
	if len(r.Warnings) > 0 {
		b = append(b, `,"warnings":[`...)
		for i, w := range r.Warnings {
			if i > 0 {
				b = append(b, ',')
			}
			b, err = appendQuote(b, w, err)
		}
		b = append(b, ']')
	}
	return append(b, "}}"...), err
}

// appendQuote keeps the first error, so a run of appends checks once.
func appendQuote(b []byte, s string, err error) ([]byte, error) {
	if err != nil {
		return b, err
	}
	return jsontext.AppendQuote(b, s)
}

// review answers one request; a patch is appended to patchBuf. full
// decodes the pod again with its init containers and volumes whole, for the
// few the view is not enough for. Every
// answer is counted and gets one audit line (auditLine).
func (m *PodMutator) review(ctx context.Context, req *requestIn, patchBuf []byte, full func() (*inject.AgentView, error)) (resp responseOut) {
	t0 := time.Now()
	// What the logs say of the request is bounded: anyone who can reach
	// the webhook can send a review, with a megabyte uid.
	ns, uid := securityctx.Shorten(req.Namespace), securityctx.Shorten(string(req.UID))
	rec := auditRecord{decision: DecisionError, reason: ReasonInternal}
	defer func() {
		if p := recover(); p != nil {
			err := fmt.Errorf("panic: %v", p)
			m.log.Error(err, "pod not mutated", "namespace", ns, "uid", uid)
			rec = auditRecord{decision: DecisionError, reason: ReasonInternal, message: err.Error()}
			resp = internalError(err.Error())
		}
		m.count(rec.decision, rec.reason)
		m.duration.Observe(time.Since(t0).Seconds())
		m.auditLine(req, &rec)
	}()
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.SubResource != "" || req.Object == nil {
		rec = auditRecord{decision: DecisionUnchanged, reason: ReasonNotAPod}
		return responseOut{Allowed: true}
	}
	// The API server always names a pod's namespace; one that is not a
	// namespace name comes from elsewhere, and would reach every message
	// and lookup below.
	if msgs := validation.IsDNS1123Label(req.Namespace); len(msgs) > 0 {
		rec = auditRecord{decision: DecisionError, reason: ReasonBadReview, message: "namespace " + securityctx.Quote(req.Namespace) + ": not a namespace name"}
		m.log.Info("bad admission review", "namespace", ns, "uid", uid, "error", rec.message)
		return responseOut{Status: &status{Status: metav1.StatusFailure, Reason: string(metav1.StatusReasonBadRequest),
			Code: http.StatusBadRequest, Message: rec.message + ": " + strings.Join(msgs, "; ")}}
	}
	out, err := m.injector.PatchView(ctx, patchBuf, req.Object, req.Namespace)
	if errors.Is(err, inject.ErrFullPodNeeded) {
		var v *inject.AgentView
		if v, err = full(); err == nil {
			out, err = m.injector.PatchAgentView(ctx, patchBuf, v, req.Namespace)
		}
	}
	switch {
	case inject.IsDenied(err):
		rec = auditRecord{decision: DecisionDenied, reason: ReasonInvalid, message: err.Error()}
		m.log.Info("pod denied", "namespace", ns, "uid", uid, "reason", logged(err.Error()))
		return forbidden(err.Error())
	case err != nil:
		rec.message = err.Error()
		m.log.Error(err, "pod not mutated", "namespace", ns, "uid", uid)
		return internalError(err.Error())
	}
	rec.pod, rec.sc, rec.stores = podName(out.Pod), out.SecurityContext, out.SecretStores
	var warnings []string
	audited := false
	if m.policies != nil && out.SecurityContext != nil {
		msg, checked, err := m.checkPolicy(ctx, req.Namespace, &out.Result)
		rec.policies = checked
		switch {
		case err != nil:
			rec.message = err.Error()
			m.log.Error(err, "pod not mutated", "namespace", ns, "uid", uid)
			return internalError(err.Error())
		case msg != "" && m.policyMode == PolicyEnforce:
			rec.decision, rec.reason, rec.message = DecisionDenied, ReasonPolicy, msg
			m.countPolicyDenial(checked)
			m.log.Info("pod denied", "namespace", ns, "uid", uid, "reason", logged(msg))
			return forbidden("pod " + ns + "/" + securityctx.Shorten(podName(out.Pod)) + ": " + msg)
		case msg != "":
			audited, rec.message = true, msg
			m.countPolicyDenial(checked)
			m.log.Info("pod admitted that policy enforcement would deny", "namespace", ns, "uid", uid, "policyMode", m.policyMode, "reason", logged(msg))
			warnings = append(warnings, "policy audit: "+msg)
		}
	}
	reason := ReasonInjected
	if audited {
		reason = ReasonPolicyAudit
	}
	// A pod with no patch was injected before (reinvocation): its
	// references were checked then.
	if m.secretKeys != nil && out.Patch != nil && len(out.SecretRefs) > 0 {
		problems, err := CheckReferences(ctx, m.secretKeys, req.Namespace, out.SecretRefs)
		switch {
		case err != nil && m.refMode == RefChecksDeny:
			rec.message = err.Error()
			m.log.Error(err, "pod not mutated", "namespace", ns, "uid", uid)
			return internalError(err.Error() + " (referenceChecks: deny)")
		case err != nil:
			m.log.Error(err, "reference check skipped", "namespace", ns, "uid", uid)
			warnings = append(warnings, "reference check skipped: "+err.Error())
		case len(problems) > 0 && m.refMode == RefChecksDeny:
			msg := strings.Join(problems, "; ")
			rec.decision, rec.reason, rec.message = DecisionDenied, ReasonMissingReference, joinMessage(rec.message, msg)
			m.log.Info("pod denied", "namespace", ns, "uid", uid, "reason", logged(msg))
			return forbidden("pod " + ns + "/" + securityctx.Shorten(podName(out.Pod)) + ": " +
				logged(msg) + ": the pod could not start (referenceChecks: deny)")
		case len(problems) > 0:
			reason, rec.message = ReasonMissingReference, joinMessage(rec.message, strings.Join(problems, "; "))
			for _, p := range problems {
				warnings = append(warnings, ReferenceWarning(p))
			}
		}
	}
	if out.Patch == nil {
		if !audited {
			reason = ReasonNoChange
		}
		rec.decision, rec.reason = DecisionUnchanged, reason
		return responseOut{Allowed: true, Warnings: warnings}
	}
	rec.decision, rec.reason = DecisionMutated, reason
	if sc := out.SecurityContext; sc != nil {
		for i := range sc.Secrets {
			if c := m.secrets[storeMount{storeOf(out.SecretStores, i), sc.Secrets[i].MountRequirement}]; c != nil {
				c.Inc()
			}
		}
	}
	if v := m.log.V(1); v.Enabled() {
		v.Info("pod mutated", "namespace", ns, "uid", uid, "patchBytes", len(out.Patch))
	}
	return responseOut{Allowed: true, Patch: out.Patch, PatchType: string(admissionv1.PatchTypeJSONPatch), Warnings: append(warnings, out.Notes...)}
}

// maxLogged bounds a reason in a log line or a denial that lists several
// problems: each is bounded already, and the limits bound how many there
// are; this bounds the sum.
const maxLogged = 16 << 10

func logged(s string) string { return securityctx.ShortenTo(s, maxLogged) }

// forbidden refuses the pod with a message for its author.
func forbidden(msg string) responseOut {
	return responseOut{Status: &status{Status: metav1.StatusFailure, Reason: string(metav1.StatusReasonForbidden),
		Code: http.StatusForbidden, Message: msg}}
}

// internalError refuses the pod because secctx, or a lookup it made,
// failed.
func internalError(msg string) responseOut {
	return responseOut{Status: &status{Status: metav1.StatusFailure, Code: http.StatusInternalServerError, Message: msg}}
}

// joinMessage joins an audit line's messages.
func joinMessage(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// countPolicyDenial counts a pod no policy allowed, once for each policy
// that was checked ("none" when none selected the namespace).
func (m *PodMutator) countPolicyDenial(checked []string) {
	if len(checked) == 0 {
		m.policyDenials.WithLabelValues(m.policyMode, "none").Inc()
	}
	for _, p := range checked {
		m.policyDenials.WithLabelValues(m.policyMode, p).Inc()
	}
}

// auditRecord is what the audit line says of one decision.
// storeOf is the store of secret i, "" when unknown.
func storeOf(stores []string, i int) string {
	if i < len(stores) {
		return stores[i]
	}
	return ""
}

// storeMount keys secctx_injected_secrets_total: a secret's store and its
// requested mount type.
type storeMount struct {
	store string
	mount securityctx.MountType
}

type auditRecord struct {
	decision, reason, message, pod string
	sc                             *securityctx.SecurityContext
	// stores name each secret's store (inject.Result.SecretStores).
	stores   []string
	policies []string
}

// auditLine logs one line per admission decision (logger "audit"): the
// pod, what it asked for (secret references, identity, tokens with their
// endpoints), the decision, the reason and the policies checked; names and
// references only, never a value. A denial's message is the one the author
// sees, which names fields and values of the request, never of a secret.
func (m *PodMutator) auditLine(req *requestIn, rec *auditRecord) {
	if !m.audit.Enabled() {
		return
	}
	// Every field is bounded (securityctx.Shorten), and endpoints lose
	// their user info and query: a line is at most a few hundred bytes a
	// field, whatever the request holds.
	short := securityctx.Shorten
	kv := []any{"decision", rec.decision, "reason", rec.reason, "namespace", short(req.Namespace), "uid", short(string(req.UID))}
	if rec.pod != "" {
		kv = append(kv, "pod", short(rec.pod))
	}
	if sc := rec.sc; sc != nil {
		if len(sc.Secrets) > 0 {
			refs := make([]string, len(sc.Secrets))
			for i, s := range sc.Secrets {
				refs[i] = storeOf(rec.stores, i) + ":" + short(strings.Join(slices.DeleteFunc([]string{s.Group, s.GroupVersion, s.Key}, func(p string) bool { return p == "" }), "/")) + ":" + s.MountRequirement.String()
			}
			kv = append(kv, "secrets", refs)
		}
		if id := sc.RunAs; id != nil {
			kv = append(kv, "serviceAccount", short(id.K8sServiceAccount), "iamRole", short(id.IAMRole), "executionIdentity", short(id.ExecutionIdentity))
			if id.OAuth2Client != nil {
				kv = append(kv, "oauth2Client", short(id.OAuth2Client.ClientID))
			}
		}
		if len(sc.Tokens) > 0 {
			toks := make([]string, len(sc.Tokens))
			for i, t := range sc.Tokens {
				toks[i] = short(t.Name) + " " + short(securityctx.RedactURL(t.TokenEndpoint+t.IdpDiscoveryEndpoint))
			}
			kv = append(kv, "tokens", toks)
		}
	}
	if rec.policies != nil {
		kv = append(kv, "policies", rec.policies)
	}
	if rec.message != "" {
		kv = append(kv, "message", short(rec.message))
	}
	m.audit.Info("admission", kv...)
}

// podName is the pod's name, or its generateName and *.
func podName(p *corev1.Pod) string {
	if p.Name == "" && p.GenerateName != "" {
		return p.GenerateName + "*"
	}
	return p.Name
}
