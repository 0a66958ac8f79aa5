package securityctx

import (
	"encoding/base32"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Flyte's own format, as flytepropeller writes it on task pods
// (flyteplugins/go/tasks/pluginmachinery/utils/secrets).
const (
	// LabelFlyteInject opts a pod in, like LabelInject.
	LabelFlyteInject = "inject-flyte-secrets"
	// FlyteAnnotationPrefix starts one annotation per secret:
	// flyte.secrets/s0, flyte.secrets/s1, ... Each value is a
	// flyteidl.core.Secret in protobuf text format, base32-encoded.
	FlyteAnnotationPrefix = "flyte.secrets/s"
)

// flyteBase32 is Flyte's encoding: RFC 4648 bit packing with a lower-case
// alphabet whose last six letters are 1-6, and no padding.
var flyteBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz123456").WithPadding(base32.NoPadding)

// flyteSecretDesc describes flyteidl.core.Secret, so that protobuf's own
// text parser reads the annotations without a dependency on flyteidl.
var flyteSecretDesc = func() protoreflect.MessageDescriptor {
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	field := func(name string, n int32, typ *descriptorpb.FieldDescriptorProto_Type, typeName string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: &name, Number: &n, Type: typ, Label: opt, JsonName: &name}
		if typeName != "" {
			f.TypeName = &typeName
		}
		return f
	}
	enumValue := func(name string, n int32) *descriptorpb.EnumValueDescriptorProto {
		return &descriptorpb.EnumValueDescriptorProto{Name: &name, Number: &n}
	}
	name, pkg, syntax, msg, enum := "flyteidl/core/security.proto", "flyteidl.core", "proto3", "Secret", "MountType"
	fd := &descriptorpb.FileDescriptorProto{
		Name: &name, Package: &pkg, Syntax: &syntax,
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: &msg,
			Field: []*descriptorpb.FieldDescriptorProto{
				field("group", 1, str, ""),
				field("group_version", 2, str, ""),
				field("key", 3, str, ""),
				field("mount_requirement", 4, descriptorpb.FieldDescriptorProto_TYPE_ENUM.Enum(), ".flyteidl.core.Secret.MountType"),
				field("env_var", 5, str, ""),
			},
			EnumType: []*descriptorpb.EnumDescriptorProto{{
				Name:  &enum,
				Value: []*descriptorpb.EnumValueDescriptorProto{enumValue("ANY", 0), enumValue("ENV_VAR", 1), enumValue("FILE", 2)},
			}},
		}},
	}
	f, err := protodesc.NewFile(fd, nil)
	if err != nil {
		panic(err)
	}
	return f.Messages().ByName("Secret")
}()

// DecodeFlyteSecret decodes one flyte.secrets/s<N> value.
func DecodeFlyteSecret(value string) (Secret, error) {
	text, err := flyteBase32.DecodeString(value)
	if err != nil {
		return Secret{}, fmt.Errorf("not Flyte's base32 (a-z, 1-6, no padding): %w", err)
	}
	m := dynamicpb.NewMessage(flyteSecretDesc)
	if err := (prototext.UnmarshalOptions{}).Unmarshal(text, m); err != nil {
		return Secret{}, fmt.Errorf("not a flyteidl.core.Secret in text format: %w", err)
	}
	fields := flyteSecretDesc.Fields()
	get := func(name protoreflect.Name) protoreflect.Value { return m.Get(fields.ByName(name)) }
	mount := MountType(get("mount_requirement").Enum())
	if !mount.Valid() {
		return Secret{}, fmt.Errorf("mount_requirement %d: must be ANY, ENV_VAR or FILE", mount)
	}
	return Secret{
		Group:            get("group").String(),
		GroupVersion:     get("group_version").String(),
		Key:              get("key").String(),
		MountRequirement: mount,
		EnvVar:           get("env_var").String(),
	}, nil
}

// FlyteSecret is a secret read from a flyte.secrets/s<N> annotation.
type FlyteSecret struct {
	// Annotation is the annotation's key, e.g. flyte.secrets/s0.
	Annotation string
	Secret     Secret
}

// HasFlyteSecrets reports whether any annotation is a flyte.secrets/s<N>.
func HasFlyteSecrets(annotations map[string]string) bool {
	for k := range annotations {
		if strings.HasPrefix(k, FlyteAnnotationPrefix) {
			return true
		}
	}
	return false
}

// DecodeFlyteAnnotations reads every flyte.secrets/s<N> annotation, in the
// order of N. Every one that does not decode is an error naming it: a pod is
// never admitted without a secret it asked for.
func DecodeFlyteAnnotations(annotations map[string]string) ([]FlyteSecret, ErrorList) {
	type entry struct {
		n   int
		key string
	}
	var entries []entry
	var errs ErrorList
	for k := range annotations {
		if !strings.HasPrefix(k, FlyteAnnotationPrefix) {
			continue
		}
		n, ok := flyteIndex(strings.TrimPrefix(k, FlyteAnnotationPrefix))
		if !ok {
			errs = append(errs, &FieldError{Field: Shorten(k), Detail: "must be named " + FlyteAnnotationPrefix + "<N>, N a number written as flytepropeller writes it (0, 1, ... 9999, no sign or leading zero)"})
			continue
		}
		entries = append(entries, entry{n, k})
	}
	slices.SortFunc(entries, func(a, b entry) int { return a.n - b.n })
	out := make([]FlyteSecret, 0, len(entries))
	for _, e := range entries {
		s, err := DecodeFlyteSecret(annotations[e.key])
		if err != nil {
			errs = append(errs, &FieldError{Field: e.key, Detail: err.Error()})
			continue
		}
		errs = append(errs, validateSecret(&s, e.key)...)
		out = append(out, FlyteSecret{Annotation: e.key, Secret: s})
	}
	slices.SortStableFunc(errs, func(a, b *FieldError) int { return strings.Compare(a.Field, b.Field) })
	return out, errs
}

// flyteIndex reads N of flyte.secrets/s<N> as flytepropeller writes it
// (strconv.Itoa): digits without a sign or a leading zero, so that s0 and s00
// are not two names for one index. 10,000 is far above the secrets a pod may
// ask for.
func flyteIndex(s string) (int, bool) {
	if s == "" || len(s) > 4 || s[0] == '0' && len(s) > 1 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// EncodeFlyteSecrets writes secrets as flytepropeller does, byte for byte:
// flyte.secrets/s<i> for the i-th secret, the text format of
// golang/protobuf's MarshalTextString (fields in number order, zero values
// left out, octal escapes), base32 with Flyte's alphabet.
func EncodeFlyteSecrets(secrets []Secret) (map[string]string, error) {
	out := make(map[string]string, len(secrets))
	for i, s := range secrets {
		if !s.MountRequirement.Valid() {
			return nil, fmt.Errorf("secrets[%d].mountRequirement %d: must be ANY, ENV_VAR or FILE", i, s.MountRequirement)
		}
		var b strings.Builder
		str := func(name, v string) {
			if v != "" {
				b.WriteString(name + ": " + quoteText(v) + "\n")
			}
		}
		str("group", s.Group)
		str("group_version", s.GroupVersion)
		str("key", s.Key)
		if s.MountRequirement != MountAny {
			b.WriteString("mount_requirement: " + s.MountRequirement.String() + "\n")
		}
		str("env_var", s.EnvVar)
		out[FlyteAnnotationPrefix+strconv.Itoa(i)] = flyteBase32.EncodeToString([]byte(b.String()))
	}
	return out, nil
}

// quoteText quotes a string as golang/protobuf's text writer does: C-style
// escapes for \n \r \t " \ and octal for every other byte outside 0x20-0x7e.
func quoteText(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		default:
			if c < 0x20 || c > 0x7e {
				fmt.Fprintf(&b, `\%03o`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// MergeFlyte adds Flyte's secrets to sc's (sc may be nil) and returns the
// merged SecurityContext with, for each secret, the name of the field it came
// from ("secrets[i]" or "flyte.secrets/s<N>"), for error messages. A secret
// asked for twice (same group, groupVersion and key) must be asked for the
// same way; it is then kept once. Otherwise the contradiction is an error
// that names both places.
func MergeFlyte(sc *SecurityContext, flyte []FlyteSecret) (*SecurityContext, []string, ErrorList) {
	out := &SecurityContext{}
	if sc != nil {
		*out = *sc
	}
	out.Secrets = slices.Clone(out.Secrets)
	fields := make([]string, len(out.Secrets), len(out.Secrets)+len(flyte))
	for i := range out.Secrets {
		fields[i] = "secrets[" + strconv.Itoa(i) + "]"
	}
	var errs ErrorList
next:
	for _, f := range flyte {
		for i, s := range out.Secrets {
			if s.Group != f.Secret.Group || s.GroupVersion != f.Secret.GroupVersion || s.Key != f.Secret.Key {
				continue
			}
			if s.MountRequirement != f.Secret.MountRequirement || s.EnvVar != f.Secret.EnvVar {
				where := fields[i]
				if !strings.HasPrefix(where, FlyteAnnotationPrefix) {
					where = AnnotationSecurityContext + " " + where
				}
				errs = append(errs, &FieldError{Field: f.Annotation, Detail: fmt.Sprintf(
					"asks for secret %s as %s, but %s asks for it as %s", describeRef(f.Secret), describeMount(f.Secret), where, describeMount(s))})
			}
			continue next
		}
		out.Secrets = append(out.Secrets, f.Secret)
		fields = append(fields, f.Annotation)
	}
	return out, fields, errs
}

func describeRef(s Secret) string {
	r := "group " + strconv.Quote(s.Group)
	if s.GroupVersion != "" {
		r += " groupVersion " + strconv.Quote(s.GroupVersion)
	}
	if s.Key != "" {
		r += " key " + strconv.Quote(s.Key)
	}
	return r
}

func describeMount(s Secret) string {
	d := s.MountRequirement.String()
	if s.EnvVar != "" {
		d += " with envVar " + s.EnvVar
	}
	return d
}
