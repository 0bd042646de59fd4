/*
 * test_replyq.c - the reply queue fed request and reply sequences as a
 * server would answer them: what reaches the client, in which order, and
 * what pgbun answers itself.
 */
#include <stdio.h>
#include <string.h>

#include "replyq.h"
#include "tap.h"

static char out[1024]; /* what the client got, one letter per message: server replies and pgbun's own */

static void emit(char type, void *arg)
{
    (void)arg;
    strncat(out, (char[]){'+', type, '\0'}, sizeof(out) - strlen(out) - 1);
}

/*
 * Runs a script: "p" a request (P B D E C S Q F) the client sent, passed;
 * "d" one pgbun sent for itself; "y1" / "y3" one pgbun answers with '1' /
 * '3'; "<" then a server reply. Returns what the client saw.
 */
static const char *run(const char *script)
{
    struct reply_queue q;

    rq_init(&q);
    out[0] = '\0';
    for (const char *p = script; *p; p += 2) {
        bool fine = true;

        switch (p[0]) {
        case 'p': fine = rq_push(&q, p[1], RQ_PASS, 0, emit, NULL); break;
        case 'd': fine = rq_push(&q, p[1], RQ_DROP, 0, emit, NULL); break;
        case 'y':
            fine = rq_push(&q, p[2], RQ_SYNTH, p[1], emit, NULL);
            p++;
            break;
        case '<':
            if (rq_reply(&q, p[1])) strncat(out, (char[]){p[1], '\0'}, sizeof(out) - strlen(out) - 1);
            rq_answer_due(&q, emit, NULL);
            break;
        case '!': rq_copy_in(&q, p[1] - '0'); break;
        }
        if (!fine) return "(out of memory)";
    }
    if (!rq_empty(&q)) strncat(out, " (left)", sizeof(out) - strlen(out) - 1);
    rq_deinit(&q);
    return out;
}

static void sees(const char *script, const char *want, const char *what)
{
    is_str(run(script), want, "%s: %s", what, script);
}

int main(void)
{
    sees("pPpBpEpS<1<2<D<C<Z", "12DCZ", "a pipeline passes whole");
    sees("pQ<T<D<C<Z", "TDCZ", "a simple query ends at Z");
    sees("pQ<E<Z", "EZ", "an error inside a simple query ends nothing");
    sees("pQpQ<C<Z<C<Z", "CZCZ", "two simple queries");
    sees("y1PpBpEpS<2<C<Z", "+12CZ", "a Parse answered by pgbun, nothing before it: at once");
    sees("pSy1PpBpEpS<Z<2<C<Z", "Z+12CZ", "a Parse answered by pgbun waits for the replies before it");
    sees("dPpBpEpS<1<2<C<Z", "2CZ", "the reply to pgbun's own Parse is hidden");
    sees("pPy3CpS<1<Z", "1+3Z", "a Close answered in its turn");
    sees("pPpBpEpS<E<Z", "EZ", "an error skips to the Sync");
    sees("pPy3CpS<E<Z", "EZ", "a Close after an error gets no answer, as from PostgreSQL");
    sees("dPpBpEpS<E<Z", "EZ", "an error of pgbun's own Parse reaches the client, whose Bind it failed");
    sees("dQ<C<Z", "", "pgbun's own query is hidden whole");
    sees("dQ<N<C<Z", "", "a notice to pgbun's own query is hidden");
    sees("pQ<N<C<Z", "NCZ", "a notice to the client's query passes");
    sees("dQ<A<S<C<Z", "AS", "notifications and parameter changes always pass");
    sees("pPpB<E", "E", "an error before the Sync was sent: nothing due, requests skipped until it");
    sees("pPpB<EpEy3CpS<Z", "EZ", "requests after the error, before the Sync, get nothing");
    sees("pPpB<EpEpSpQ<Z<C<Z", "EZCZ", "after the Sync the queue answers again");
    sees("pDpS<t<T<Z", "tTZ", "Describe of a statement ends at its RowDescription");
    sees("pDpS<t<n<Z", "tnZ", "... or NoData");
    sees("pBpDpEpS<2<T<D<s<Z", "2TDsZ", "a portal described, executed, suspended");
    sees("pEpS<I<Z", "IZ", "an empty query");
    sees("pFpS<V<Z<Z", "VZZ", "a function call ends at its Z");
    sees("pEpSpS<G!2<C", "GC", "COPY FROM STDIN: the Syncs behind the Execute are ignored");
    sees("pEpSpS<G!2<CpS<Z", "GCZ", "... and the client's Sync after CopyDone ends it");
    sees("pEpS<H<d<c<C<Z", "HdcCZ", "COPY TO STDOUT");
    sees("<Z", "Z", "a reply with nothing due passes (the caller judges)");
    {
        char big[2048] = "";

        for (int i = 0; i < 300; i++)
            strcat(big, "pP");
        for (int i = 0; i < 300; i++)
            strcat(big, "<1");
        ok(strspn(run(big), "1") == 300 && out[300] == '\0', "300 requests in flight: the ring grows");
    }
    return done_testing();
}
