//go:build pkcs11 && cgo

package pkcs11

import (
	"context"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

// pool hands out sessions, one caller at a time each: PKCS#11 sessions must
// not be used concurrently. It logs in once for the token, replaces
// sessions the token declares dead, and logs in again when the token has
// logged Signet out (for instance after every session was closed).
type pool struct {
	ctx  *p11.Ctx
	slot uint
	pin  string
	idle chan p11.SessionHandle
	// slots bounds open sessions: a token holds a slot while a session is open.
	slots   chan struct{}
	loginMu sync.Mutex

	closeMu sync.Mutex
	closed  bool
}

func newPool(ctx *p11.Ctx, slot uint, pin string, size int) *pool {
	return &pool{ctx: ctx, slot: slot, pin: pin, idle: make(chan p11.SessionHandle, size), slots: make(chan struct{}, size)}
}

func (p *pool) get(ctx context.Context) (p11.SessionHandle, error) {
	select {
	case sh := <-p.idle:
		return sh, nil
	default:
	}
	select {
	case sh := <-p.idle:
		return sh, nil
	case p.slots <- struct{}{}:
		sh, err := p.ctx.OpenSession(p.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
		if err != nil {
			<-p.slots
			return 0, err
		}
		return sh, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// put returns a session. A session the token declared dead is forgotten,
// not closed: it is gone already, and the token may have given its handle
// number to a new session that closing it would kill.
func (p *pool) put(sh p11.SessionHandle, err error) {
	p.closeMu.Lock()
	closed := p.closed
	p.closeMu.Unlock()
	switch {
	case deadSession(err):
		<-p.slots
	case closed:
		_ = p.ctx.CloseSession(sh) // the pool is closed: the session is dropped either way
		<-p.slots
	default:
		p.idle <- sh
	}
}

func deadSession(err error) bool {
	return isCode(err, p11.CKR_SESSION_HANDLE_INVALID) || isCode(err, p11.CKR_SESSION_CLOSED) ||
		isCode(err, p11.CKR_DEVICE_REMOVED) || isCode(err, p11.CKR_TOKEN_NOT_PRESENT)
}

// with runs fn on a pooled session. A dead session is replaced and fn runs
// again; a logged-out token is logged in again and fn runs again.
func (p *pool) with(ctx context.Context, fn func(p11.SessionHandle) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var err error
	// Every pooled session may be dead at once (the token closed them all),
	// so dead sessions may be met as many times as the pool is large.
	for dead, other := 0, 0; dead <= cap(p.slots) && other < 3; {
		var sh p11.SessionHandle
		if sh, err = p.get(ctx); err != nil {
			return err
		}
		// A logged-out session does not fail a search for private keys, it
		// just finds none; so check the login before every use.
		if err = p.loggedIn(sh); err == nil {
			err = fn(sh)
		}
		p.put(sh, err)
		switch {
		case deadSession(err):
			dead++
			continue
		case isCode(err, p11.CKR_OBJECT_HANDLE_INVALID), isCode(err, p11.CKR_KEY_HANDLE_INVALID):
			other++
			continue // a cached object handle went stale (fn forgot it); look again
		case isCode(err, p11.CKR_USER_NOT_LOGGED_IN):
			other++
			if lerr := p.login(ctx); lerr != nil {
				return lerr
			}
			continue
		}
		return err
	}
	return err
}

// loggedIn reports CKR_USER_NOT_LOGGED_IN for a session of a token that
// has logged Signet out.
func (p *pool) loggedIn(sh p11.SessionHandle) error {
	info, err := p.ctx.GetSessionInfo(sh)
	if err != nil {
		return err
	}
	if info.State != p11.CKS_RO_USER_FUNCTIONS && info.State != p11.CKS_RW_USER_FUNCTIONS {
		return p11.Error(p11.CKR_USER_NOT_LOGGED_IN)
	}
	return nil
}

// login logs the user in; the login holds for every session of the token.
func (p *pool) login(ctx context.Context) error {
	p.loginMu.Lock()
	defer p.loginMu.Unlock()
	var err error
	for range cap(p.slots) + 1 { // skipping sessions that died
		var sh p11.SessionHandle
		if sh, err = p.get(ctx); err != nil {
			return classify(err, "opening a session")
		}
		err = p.ctx.Login(sh, p11.CKU_USER, p.pin)
		if isCode(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
			err = nil
		}
		p.put(sh, err)
		if !deadSession(err) {
			break
		}
	}
	if err != nil {
		return classify(err, "logging in to the token")
	}
	return nil
}

func (p *pool) close() {
	p.closeMu.Lock()
	p.closed = true
	p.closeMu.Unlock()
	for {
		select {
		case sh := <-p.idle:
			_ = p.ctx.CloseSession(sh) // the pool is closing: the session is dropped either way
			<-p.slots
		default:
			return
		}
	}
}
