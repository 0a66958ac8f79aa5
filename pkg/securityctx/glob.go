package securityctx

import "unicode/utf8"

// Glob reports whether value matches pattern, where * matches any run of
// characters (/ and : included) and ? any one character; every other
// character matches itself. It runs in time linear in
// len(pattern)×len(value) at worst, whatever the pattern: no backtracking
// blow-up on patterns such as a*a*a*a*b.
func Glob(pattern, value string) bool {
	if isASCII(pattern) && isASCII(value) || !utf8.ValidString(pattern) || !utf8.ValidString(value) {
		return glob([]byte(pattern), []byte(value)) // invalid UTF-8: bytes, so that no two bytes are equal as U+FFFD
	}
	// ? is one character, not one byte.
	return glob([]rune(pattern), []rune(value))
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// glob is the classic two-pointer match with one remembered star: a later
// star makes every earlier one's choice irrelevant, so only the last is
// ever backtracked to.
func glob[T byte | rune](pattern, value []T) bool {
	p, v := 0, 0
	star, mark := -1, 0
	for v < len(value) {
		switch {
		case p < len(pattern) && pattern[p] != '*' && (pattern[p] == '?' || pattern[p] == value[v]):
			p++
			v++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, v
			p++
		case star >= 0:
			p = star + 1
			mark++
			v = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
