package server

import (
	"net/http"

	"github.com/impersonator/impersonator/internal/action"
	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/httpx"
)

// kindedSubject reads a /v1 path's subject as subject does, then puts its id
// in the one spelling of the collection's declared id kind (the policy in
// force), as the action mints it: the history of an upper-case UUID is the
// history of the record. An id not of the kind is a 400.
func kindedSubject(policies *action.PolicyHolder, subject func(*http.Request) (audit.Subject, error)) func(*http.Request) (audit.Subject, error) {
	return func(r *http.Request) (audit.Subject, error) {
		subj, err := subject(r)
		if err != nil {
			return subj, err
		}
		if subj.ID, err = policies.Load().IDs[subj.Collection].Parse(subj.ID); err != nil {
			return subj, httpx.Errorf(http.StatusBadRequest, "id: "+err.Error(), err)
		}
		return subj, nil
	}
}

// kindedID puts a filter's record id in the one spelling of its
// collection's declared id kind (the policy in force); an id without a
// collection, or of an undeclared one, is read as the action reads it.
func kindedID(policies *action.PolicyHolder) func(collection, id string) (string, error) {
	return func(collection, id string) (string, error) {
		return policies.Load().IDs[collection].Parse(id)
	}
}
