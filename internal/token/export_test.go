package token

// PrivateForTest exposes a key's private half to this package's tests, which
// forge tokens with it.
func PrivateForTest(k *Key) (any, bool) { return k.private, k.private != nil }
