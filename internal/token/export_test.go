package token

// PrivateForTest exposes a key's private half to this package's tests, which
// forge tokens with it.
func PrivateForTest(k *Key) (any, bool) { return k.private, k.private != nil }

// ReloadsForTest counts the successful reloads of ks.
func ReloadsForTest(ks *Keyset) int64 { return ks.reloads.Load() }
