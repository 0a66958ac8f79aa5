package securityctx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// Decode parses a SecurityContext from its JSON form, as protobuf-JSON does for
// flyteidl.core.SecurityContext: field names in camelCase or the original
// snake_case, enums by name or number, null for an unset field. Unknown fields,
// a field given twice (under either name), wrong types and undefined enum values
// are errors; all of them are returned, each with its field path. Malformed
// JSON stops the decoding at the first syntax error.
func Decode(data []byte) (*SecurityContext, error) {
	sc, errs := decode(data)
	if len(errs) > 0 {
		return nil, errs
	}
	return sc, nil
}

// Parse decodes and validates, and reports every problem of both kinds at
// once: a bad enum in one secret and a bad envVar in another both show. It
// returns what it could decode, for further checks that report more
// problems; that value is nil only when the JSON itself is malformed, and
// must not be used when the list is not empty.
func Parse(data []byte) (*SecurityContext, ErrorList) {
	return ParseWith(data, ValidateOptions{})
}

// ParseWith is Parse with validation options.
func ParseWith(data []byte, o ValidateOptions) (*SecurityContext, ErrorList) {
	sc, errs := decode(data)
	if sc == nil {
		return nil, errs
	}
	bad := make(map[string]bool, len(errs))
	for _, e := range errs {
		bad[e.Field] = true
	}
	for _, e := range sc.ValidateWith(o) {
		// A field that did not decode is left empty; saying it is also
		// missing would repeat the same problem.
		if !bad[e.Field] {
			errs = append(errs, e)
		}
	}
	return sc, errs
}

// decoders are reused: a jsontext.Decoder holds buffers worth keeping
// between the pods of a busy cluster.
var decoders = sync.Pool{New: func() any { return &pooledDecoder{} }}

type pooledDecoder struct {
	rd  bytes.Reader
	dec jsontext.Decoder
}

func decode(data []byte) (*SecurityContext, ErrorList) {
	pd := decoders.Get().(*pooledDecoder)
	defer decoders.Put(pd)
	pd.rd.Reset(data)
	// Duplicate names are found by object(), which names both spellings.
	pd.dec.Reset(&pd.rd, jsontext.AllowDuplicateNames(true))
	d := &decoder{dec: &pd.dec}
	sc := &SecurityContext{}
	isObject := d.object("", securityContextFields, func(name, at string) {
		switch name {
		case "runAs":
			sc.RunAs = d.identity(child(at, name))
		case "secrets":
			d.array(child(at, name), func(p string) {
				s := d.secret(p)
				if s == nil {
					s = &Secret{}
				}
				sc.Secrets = append(sc.Secrets, *s)
			})
		case "tokens":
			d.array(child(at, name), func(p string) {
				t := OAuth2TokenRequest{}
				d.object(p, tokenFields, func(name, at string) {
					switch name {
					case "name":
						t.Name = d.str(at, name)
					case "type":
						t.Type = TokenType(d.enum(at, name, tokenTypeNames))
					case "client":
						t.Client = d.client(child(at, name))
					case "idpDiscoveryEndpoint":
						t.IdpDiscoveryEndpoint = d.str(at, name)
					case "tokenEndpoint":
						t.TokenEndpoint = d.str(at, name)
					}
				})
				sc.Tokens = append(sc.Tokens, t)
			})
		case "connectionRef":
			sc.ConnectionRef = d.str(at, name)
		}
	})
	if !d.stopped {
		if _, err := d.dec.ReadToken(); err != io.EOF {
			d.fail("", "invalid JSON: data after the object")
		} else if !isObject && len(d.errs) == 0 {
			d.fail("", "must be a JSON object, not null")
		}
	}
	if d.stopped || !isObject {
		return nil, d.errs
	}
	return sc, d.errs
}

// UnmarshalJSON decodes strictly, as Decode does.
func (sc *SecurityContext) UnmarshalJSON(data []byte) error {
	v, err := Decode(data)
	if err != nil {
		return err
	}
	*sc = *v
	return nil
}

// Encode returns the canonical JSON form: camelCase names, enums by name, unset
// fields left out.
func Encode(sc *SecurityContext) (string, error) {
	if sc == nil {
		return "", errors.New("encode security context: nil")
	}
	b, err := json.Marshal(sc)
	if err != nil {
		return "", fmt.Errorf("encode security context: %w", err)
	}
	return string(b), nil
}

// The fields of each message, by their camelCase names; the snake_case form of
// each name is accepted too.
var (
	securityContextFields = newFields("runAs", "secrets", "tokens", "connectionRef")
	identityFields        = newFields("iamRole", "k8sServiceAccount", "oauth2Client", "executionIdentity")
	secretFields          = newFields("group", "groupVersion", "key", "mountRequirement", "envVar")
	clientFields          = newFields("clientId", "clientSecret")
	tokenFields           = newFields("name", "type", "client", "idpDiscoveryEndpoint", "tokenEndpoint")
)

type fields struct {
	names   []string       // camelCase
	byName  map[string]int // camelCase and snake_case name -> index in names
	allowed string
}

func newFields(names ...string) fields {
	f := fields{names: names, byName: map[string]int{}, allowed: strings.Join(names, ", ")}
	for i, n := range names {
		f.byName[n] = i
		f.byName[snake(n)] = i
	}
	return f
}

// snake turns a protobuf-JSON name back into the .proto field name:
// k8sServiceAccount -> k8s_service_account, oauth2Client -> oauth2_client.
func snake(camel string) string {
	var b strings.Builder
	for _, r := range camel {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// decoder walks the JSON tokens once, collecting every problem. A syntax
// error stops it: nothing after it can be read reliably.
type decoder struct {
	dec     *jsontext.Decoder
	errs    ErrorList
	stopped bool
}

func (d *decoder) fail(path, detail string) {
	d.errs = append(d.errs, &FieldError{Field: path, Detail: detail})
}

func (d *decoder) syntax(path string, err error) {
	d.stopped = true
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		d.fail(path, "invalid JSON: unexpected end of input")
		return
	}
	msg := err.Error()
	var se *jsontext.SyntacticError
	if errors.As(err, &se) && se.Err != nil {
		msg = fmt.Sprintf("%v at byte %d", se.Err, se.ByteOffset)
	}
	d.fail(path, "invalid JSON: "+msg)
}

// peek returns the next value's kind, or 0 after reporting a syntax error.
func (d *decoder) peek(path string) jsontext.Kind {
	if d.stopped {
		return 0
	}
	k := d.dec.PeekKind()
	if k == 0 {
		_, err := d.dec.ReadToken()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		d.syntax(path, err)
	}
	return k
}

func (d *decoder) read(path string) (jsontext.Token, bool) {
	tok, err := d.dec.ReadToken()
	if err != nil {
		d.syntax(path, err)
		return jsontext.Token{}, false
	}
	return tok, true
}

// wrongType reports a value of the wrong kind and skips it.
func (d *decoder) wrongType(path, want string, k jsontext.Kind) {
	d.fail(path, "must be "+want+", not "+kindName(k))
	if err := d.dec.SkipValue(); err != nil {
		d.syntax(path, err)
	}
}

// object walks the JSON object at path, calling fn, which must read exactly
// one value, for each known field with its camelCase name and the object's
// path. Paths are strings only down to objects: a field's own path is built
// only for an error message. It reports whether the value was an object.
func (d *decoder) object(path string, f fields, fn func(name, at string)) bool {
	switch k := d.peek(path); k {
	case 0:
		return false
	case 'n':
		d.read(path)
		return false
	case '{':
		d.read(path)
	default:
		d.wrongType(path, "a JSON object", k)
		return false
	}
	var seen [8]string // the spelling each field was first given in
	for !d.stopped && d.dec.PeekKind() != '}' {
		tok, ok := d.read(path)
		if !ok {
			return true
		}
		key := tok.String()
		i, known := f.byName[key]
		switch {
		case !known:
			d.fail(child(path, key), "unknown field; allowed: "+f.allowed)
		case seen[i] != "":
			d.fail(child(path, key), fmt.Sprintf("given twice (also as %q)", seen[i]))
		default:
			seen[i] = key
			fn(f.names[i], path)
			continue
		}
		if err := d.dec.SkipValue(); err != nil {
			d.syntax(child(path, key), err)
		}
	}
	if !d.stopped {
		d.read(path)
	}
	return true
}

func (d *decoder) array(path string, fn func(path string)) {
	switch k := d.peek(path); k {
	case 0:
		return
	case 'n':
		d.read(path)
		return
	case '[':
		d.read(path)
	default:
		d.wrongType(path, "a JSON array", k)
		return
	}
	for i := 0; !d.stopped && d.dec.PeekKind() != ']'; i++ {
		fn(index(path, i))
	}
	if !d.stopped {
		d.read(path)
	}
}

func (d *decoder) str(at, name string) string {
	switch k := d.peek(at); k {
	case 0:
	case 'n':
		d.read(at)
	case '"':
		tok, _ := d.read(at)
		return tok.String()
	default:
		d.wrongType(child(at, name), "a string", k)
	}
	return ""
}

func (d *decoder) enum(at, name string, names []string) int32 {
	switch k := d.peek(at); k {
	case 0:
	case 'n':
		d.read(at)
	case '"', '0':
		tok, ok := d.read(at)
		if !ok {
			return 0
		}
		if n, ok := enumValue(tok.String(), k == '"', names); ok {
			return n
		}
		d.errs = append(d.errs, &FieldError{Field: child(at, name), Value: tok.String(), HasValue: true, Detail: allowedEnum(names)})
	default:
		v, err := d.dec.ReadValue()
		if err != nil {
			d.syntax(at, err)
			return 0
		}
		d.errs = append(d.errs, &FieldError{Field: child(at, name), Value: string(v), HasValue: true, Detail: allowedEnum(names)})
	}
	return 0
}

func (d *decoder) secret(path string) *Secret {
	s := &Secret{}
	if !d.object(path, secretFields, func(name, at string) {
		switch name {
		case "group":
			s.Group = d.str(at, name)
		case "groupVersion":
			s.GroupVersion = d.str(at, name)
		case "key":
			s.Key = d.str(at, name)
		case "mountRequirement":
			s.MountRequirement = MountType(d.enum(at, name, mountTypeNames))
		case "envVar":
			s.EnvVar = d.str(at, name)
		}
	}) {
		return nil
	}
	return s
}

func (d *decoder) client(path string) *OAuth2Client {
	c := &OAuth2Client{}
	if !d.object(path, clientFields, func(name, at string) {
		switch name {
		case "clientId":
			c.ClientID = d.str(at, name)
		case "clientSecret":
			c.ClientSecret = d.secret(child(at, name))
		}
	}) {
		return nil
	}
	return c
}

func (d *decoder) identity(path string) *Identity {
	id := &Identity{}
	if !d.object(path, identityFields, func(name, at string) {
		switch name {
		case "iamRole":
			id.IAMRole = d.str(at, name)
		case "k8sServiceAccount":
			id.K8sServiceAccount = d.str(at, name)
		case "oauth2Client":
			id.OAuth2Client = d.client(child(at, name))
		case "executionIdentity":
			id.ExecutionIdentity = d.str(at, name)
		}
	}) {
		return nil
	}
	return id
}

// enumValue takes a value's name, or its number in range.
func enumValue(v string, isName bool, names []string) (int32, bool) {
	if isName {
		for i, n := range names {
			if v == n {
				return int32(i), true
			}
		}
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || n < 0 || int(n) >= len(names) {
		return 0, false
	}
	return int32(n), true
}

// decodeEnum is enumValue for a JSON value, for the types' UnmarshalJSON.
func decodeEnum(v []byte, names []string) (int32, error) {
	v = bytes.TrimSpace(v)
	s, isName := string(v), false
	if len(v) > 0 && v[0] == '"' {
		if err := json.Unmarshal(v, &s); err != nil {
			return 0, err
		}
		isName = true
	}
	if n, ok := enumValue(s, isName, names); ok {
		return n, nil
	}
	return 0, fmt.Errorf("unknown value %s: %s", v, allowedEnum(names))
}

func allowedEnum(names []string) string {
	nums := make([]string, len(names))
	for i := range names {
		nums[i] = strconv.Itoa(i)
	}
	return "must be one of " + strings.Join(names, ", ") + " (or " + strings.Join(nums, ", ") + ")"
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case 't', 'f':
		return "a boolean"
	}
	return "null"
}
