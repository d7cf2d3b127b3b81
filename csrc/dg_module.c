/*
 * dg_module.c -- the CPython binding of the distgan core: module distgan._core.
 *
 * The ONLY file of csrc/ that includes Python.h and the NumPy headers. One
 * function per C op of distgan.h, named after it without the dg_ prefix and
 * with a leading underscore (dg_conv2d_forward -> _conv2d_forward). The public,
 * user-facing names live in distgan/ops.py, which validates user arguments
 * first and allocates every output; this layer re-checks everything, because a
 * wrong pointer or size here crashes the interpreter instead of raising.
 *
 * Every function:
 *  - parses with PyArg_ParseTupleAndKeywords and the O& converters below:
 *      conv_input      float32 input (TypeError otherwise); a non-contiguous,
 *                      misaligned or byte-swapped input is COPIED to a
 *                      C-contiguous aligned array (copying an input is harmless);
 *      conv_output     float32 output or gradient buffer, which must already be
 *                      C-contiguous, aligned, native-endian and writeable
 *                      (TypeError for the dtype, ValueError for the layout);
 *                      NEVER copied: a copy would swallow the write and the
 *                      backward `+=`;
 *      conv_*_opt      the same, accepting None as a NULL pointer (bias,
 *                      gamma/beta, running statistics, gradients not needed);
 *      conv_labels     integer labels, converted to a C-contiguous int64 copy;
 *      conv_u64        a Python int in [0, 2**64) (RNG seed and offset);
 *  - infers every size from the array shapes and checks that they agree with
 *    each other (ValueError naming the argument, with the expected and the
 *    actual shape), that the sizes the C code holds in an int do not overflow
 *    one (ValueError "... would overflow"), that no output or gradient buffer
 *    overlaps another argument in memory, and the scalar ranges the header
 *    states, so that the core's own status checks are a second line only;
 *  - releases the GIL around the C call (it holds a reference to every array
 *    while doing so) and maps a non-OK dg_status to ValueError (MemoryError
 *    for DG_STATUS_ERR_NOMEM) naming the op;
 *  - releases every reference at one `exit:` label, on success and on error.
 *
 * Forward ops fill their preallocated outputs and return None; loss forwards
 * return the loss as a Python float.
 *
 * The forward ops of a generator's eval-mode forward (the convolutions, the
 * activations, _linear_bn_convt_forward) can also be prepared (_prepare): their
 * arguments converted and checked once, the call kept with a reference to each
 * array (dg_prepared), and run again by calling it. Network.predict replays its
 * plan so: in a teacher's one-image sample the checks, the keyword dicts and the
 * calls of the partials cost ~2 % of the time, their code and data cold after
 * the kernels (PERFORMANCE.md log 130).
 *
 * Dimension letters are those of distgan.h (N, C, H, W, OC, OH, OW, KH, KW, SH,
 * SW, PH, PW, HW, K, D).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <numpy/arrayobject.h>

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "distgan.h"

/* ------------------------------------------------------------------------- */
/* Converters                                                                 */
/* ------------------------------------------------------------------------- */

/* One array argument: its names for messages and, once converted, a NEW
 * reference to the array the C code reads or writes (NULL for None). */
typedef struct {
    const char *op;     /* binding name, e.g. "_conv2d_forward" */
    const char *name;   /* argument name, e.g. "weight" */
    PyArrayObject *arr; /* new reference, or NULL */
    int is_out;         /* written by the op (output or gradient buffer) */
    int copied;         /* arr is a copy of the input given (conv_input) */
} dg_arg;

#define ARG(argname) {op, argname, NULL, 0, 0}

/* A uint64 scalar argument (RNG seed and offset). */
typedef struct {
    const char *op;
    const char *name;
    uint64_t value;
} dg_u64;

static int
not_an_array(const dg_arg *a, PyObject *obj, const char *what)
{
    PyErr_Format(PyExc_TypeError, "%s: %s must be a numpy.ndarray of %s, got %.200s",
                 a->op, a->name, what, Py_TYPE(obj)->tp_name);
    return 0;
}

/* float32 input; copied when it is not C-contiguous, aligned and native-endian. */
static int
conv_input(PyObject *obj, void *addr)
{
    dg_arg *a = (dg_arg *)addr;
    PyArrayObject *arr;

    if (!PyArray_Check(obj)) {
        return not_an_array(a, obj, "float32");
    }
    arr = (PyArrayObject *)obj;
    if (PyArray_TYPE(arr) != NPY_FLOAT) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be float32, got %S", a->op,
                     a->name, (PyObject *)PyArray_DESCR(arr));
        return 0;
    }
    /* a new reference: arr itself when it already qualifies, else a copy */
    a->arr = (PyArrayObject *)PyArray_FromArray(arr, PyArray_DescrFromType(NPY_FLOAT),
                                                NPY_ARRAY_IN_ARRAY);
    a->copied = a->arr != NULL && a->arr != arr;
    return a->arr != NULL;
}

static int
conv_input_opt(PyObject *obj, void *addr)
{
    return obj == Py_None ? 1 : conv_input(obj, addr);
}

/* float32 output or gradient buffer, used in place: never copied. */
static int
conv_output(PyObject *obj, void *addr)
{
    dg_arg *a = (dg_arg *)addr;
    PyArrayObject *arr;

    if (!PyArray_Check(obj)) {
        return not_an_array(a, obj, "float32");
    }
    arr = (PyArrayObject *)obj;
    if (PyArray_TYPE(arr) != NPY_FLOAT || !PyArray_ISNOTSWAPPED(arr)) {
        PyErr_Format(PyExc_TypeError,
                     "%s: %s must be float32 in native byte order, got %S",
                     a->op, a->name, (PyObject *)PyArray_DESCR(arr));
        return 0;
    }
    if (!PyArray_IS_C_CONTIGUOUS(arr)) {
        PyErr_Format(PyExc_ValueError,
                     "%s: %s must be C-contiguous: it is written in place and "
                     "is never copied", a->op, a->name);
        return 0;
    }
    if (!PyArray_ISALIGNED(arr)) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be aligned to float32",
                     a->op, a->name);
        return 0;
    }
    if (!PyArray_ISWRITEABLE(arr)) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be writeable, it is read-only",
                     a->op, a->name);
        return 0;
    }
    Py_INCREF(obj);
    a->arr = arr;
    a->is_out = 1;
    return 1;
}

static int
conv_output_opt(PyObject *obj, void *addr)
{
    return obj == Py_None ? 1 : conv_output(obj, addr);
}

/* Integer labels of any integer dtype, as a C-contiguous int64 copy when needed.
 * The range 0 <= label < K is checked later (check_labels), when K is known;
 * FORCECAST lets uint64 through, whose values >= 2**63 wrap negative and fail
 * that check. */
static int
conv_labels(PyObject *obj, void *addr)
{
    dg_arg *a = (dg_arg *)addr;
    PyArrayObject *arr;

    if (!PyArray_Check(obj)) {
        return not_an_array(a, obj, "integers");
    }
    arr = (PyArrayObject *)obj;
    if (!PyArray_ISINTEGER(arr)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be an integer array, got %S",
                     a->op, a->name, (PyObject *)PyArray_DESCR(arr));
        return 0;
    }
    a->arr = (PyArrayObject *)PyArray_FromArray(arr, PyArray_DescrFromType(NPY_INT64),
                                                NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    return a->arr != NULL;
}

/* A Python int (or an object with __index__) in [0, 2**64). */
static int
conv_u64(PyObject *obj, void *addr)
{
    dg_u64 *u = (dg_u64 *)addr;
    PyObject *idx, *max = NULL;
    int overflow = 0, too_big = 0;
    long long sv;

    if (!PyIndex_Check(obj) || PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be an int, got %.200s", u->op,
                     u->name, Py_TYPE(obj)->tp_name);
        return 0;
    }
    idx = PyNumber_Index(obj);
    if (idx == NULL) {
        return 0;
    }
    sv = PyLong_AsLongLongAndOverflow(idx, &overflow);
    if (sv == -1 && overflow == 0 && PyErr_Occurred()) {
        goto fail;
    }
    if (overflow < 0 || (overflow == 0 && sv < 0)) {
        too_big = 1;
    }
    else if (overflow > 0) {
        max = PyLong_FromUnsignedLongLong(UINT64_MAX);
        if (max == NULL) {
            goto fail;
        }
        too_big = PyObject_RichCompareBool(idx, max, Py_GT);
        if (too_big < 0) {
            goto fail;
        }
    }
    if (too_big) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be in [0, 2**64), got %R",
                     u->op, u->name, idx);
        goto fail;
    }
    u->value = overflow > 0 ? (uint64_t)PyLong_AsUnsignedLongLong(idx) : (uint64_t)sv;
    if (PyErr_Occurred()) {
        goto fail;
    }
    Py_XDECREF(max);
    Py_DECREF(idx);
    return 1;
fail:
    Py_XDECREF(max);
    Py_DECREF(idx);
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Checks (each returns 0, or -1 with an exception set)                       */
/* ------------------------------------------------------------------------- */

#define DG_ANY (-1)  /* shape wildcard: any size >= 1 */
#define DG_ANY0 (-2) /* shape wildcard: any size >= 0 */

#define F32(a) ((a).arr != NULL ? (float *)PyArray_DATA((a).arr) : NULL)
#define CF32(a) ((const float *)F32(a))
#define I64(a) ((const int64_t *)PyArray_DATA((a).arr))
#define SIZE(a) ((size_t)PyArray_SIZE((a).arr))
#define DIM(a, i) (PyArray_DIM((a).arr, (i)))

static PyObject *
shape_tuple(int nd, const npy_intp *dims)
{
    PyObject *t = PyTuple_New(nd);
    if (t == NULL) {
        return NULL;
    }
    for (int i = 0; i < nd; i++) {
        PyObject *v = PyLong_FromSsize_t((Py_ssize_t)dims[i]);
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

/* ValueError "<op>: <name> <layout> has shape <got>, <msg>[ <expected>]" */
static int
shape_error(const dg_arg *a, const char *layout, const char *msg, int nd,
            const npy_intp *expect)
{
    PyObject *got = shape_tuple(PyArray_NDIM(a->arr), PyArray_DIMS(a->arr));
    PyObject *exp = NULL;
    if (got == NULL) {
        return -1;
    }
    if (expect == NULL) {
        PyErr_Format(PyExc_ValueError, "%s: %s %s has shape %R, %s", a->op, a->name,
                     layout, got, msg);
    }
    else if ((exp = shape_tuple(nd, expect)) != NULL) {
        PyErr_Format(PyExc_ValueError, "%s: %s %s has shape %R, %s %R", a->op,
                     a->name, layout, got, msg, exp);
    }
    Py_DECREF(got);
    Py_XDECREF(exp);
    return -1;
}

/* a must be nd-D with shape `expect`, where DG_ANY / DG_ANY0 match any size
 * >= 1 / >= 0; every size must fit a C int. layout names the dimensions, e.g.
 * "(N, C, H, W)", for the messages. */
static int
check_shape(const dg_arg *a, int nd, const npy_intp *expect, const char *layout)
{
    const npy_intp *got = PyArray_DIMS(a->arr);
    npy_intp full[NPY_MAXDIMS];
    int mismatch = 0;

    if (PyArray_NDIM(a->arr) != nd) {
        PyObject *t = shape_tuple(PyArray_NDIM(a->arr), got);
        if (t != NULL) {
            PyErr_Format(PyExc_ValueError, "%s: %s %s must be %d-D, got shape %R",
                         a->op, a->name, layout, nd, t);
            Py_DECREF(t);
        }
        return -1;
    }
    for (int i = 0; i < nd; i++) {
        full[i] = expect[i] >= 0 ? expect[i] : got[i];
        mismatch |= full[i] != got[i];
    }
    if (mismatch) {
        return shape_error(a, layout, "expected", nd, full);
    }
    for (int i = 0; i < nd; i++) {
        if (expect[i] == DG_ANY && got[i] < 1) {
            return shape_error(a, layout, "every size must be >= 1", 0, NULL);
        }
        if (got[i] > INT_MAX) {
            return shape_error(a, layout, "a size would overflow a C int", 0, NULL);
        }
    }
    return 0;
}

/* a must have exactly the shape of ref (any ndim; sizes may be 0). */
static int
check_like(const dg_arg *a, const dg_arg *ref)
{
    int nd = PyArray_NDIM(ref->arr);
    PyObject *got, *exp = NULL;

    if (PyArray_NDIM(a->arr) == nd &&
        PyArray_CompareLists(PyArray_DIMS(a->arr), PyArray_DIMS(ref->arr), nd)) {
        return 0;
    }
    got = shape_tuple(PyArray_NDIM(a->arr), PyArray_DIMS(a->arr));
    if (got != NULL && (exp = shape_tuple(nd, PyArray_DIMS(ref->arr))) != NULL) {
        PyErr_Format(PyExc_ValueError, "%s: %s has shape %R, expected %R (the shape of %s)",
                     a->op, a->name, got, exp, ref->name);
    }
    Py_XDECREF(got);
    Py_XDECREF(exp);
    return -1;
}

/* *out = the product of n factors that the C code holds in an int. */
static int
int_product(const char *op, const char *what, int n, const long long *f, int *out)
{
    long long p = 1;
    for (int i = 0; i < n; i++) {
        if (f[i] < 0 || (f[i] > 0 && p > INT_MAX / f[i])) {
            PyErr_Format(PyExc_ValueError, "%s: %s would overflow a C int (> %d)",
                         op, what, INT_MAX);
            return -1;
        }
        p *= f[i];
    }
    *out = (int)p;
    return 0;
}

/* 0 <= labels[i] < K for every label (labels already int64). */
static int
check_labels(const dg_arg *a, long long K)
{
    const int64_t *l = (const int64_t *)PyArray_DATA(a->arr);
    npy_intp n = PyArray_SIZE(a->arr);
    for (npy_intp i = 0; i < n; i++) {
        if (l[i] < 0 || l[i] >= K) {
            PyErr_Format(PyExc_ValueError, "%s: %s[%zd] = %lld is out of range [0, %lld)",
                         a->op, a->name, (Py_ssize_t)i, (long long)l[i], K);
            return -1;
        }
    }
    return 0;
}

/* No output or gradient buffer may share memory with another argument (a GEMM
 * or an accumulation that reads what it writes computes garbage), two outputs
 * included. exact_alias_ok lets an output BE an input (same start, same size),
 * which the elementwise forwards allow (distgan.h: "out may alias inp"). */
static int
check_overlap(const char *op, dg_arg *const *list, int n, int exact_alias_ok)
{
    for (int i = 0; i < n; i++) {
        for (int j = i + 1; j < n; j++) {
            const dg_arg *a = list[i], *b = list[j];
            uintptr_t pa, pb, na, nb;
            if (a->arr == NULL || b->arr == NULL || !(a->is_out || b->is_out)) {
                continue;
            }
            pa = (uintptr_t)PyArray_DATA(a->arr);
            pb = (uintptr_t)PyArray_DATA(b->arr);
            na = (uintptr_t)PyArray_NBYTES(a->arr);
            nb = (uintptr_t)PyArray_NBYTES(b->arr);
            if (na == 0 || nb == 0 || !(pa < pb + nb && pb < pa + na)) {
                continue;
            }
            if (exact_alias_ok && pa == pb && na == nb) {
                continue;
            }
            PyErr_Format(PyExc_ValueError,
                         "%s: %s and %s overlap in memory; an output or gradient "
                         "buffer must not share memory with another argument",
                         op, a->name, b->name);
            return -1;
        }
    }
    return 0;
}

/* ValueError "<op>: <name> must be <must>, got <v>" */
static int
bad_scalar(const char *op, const char *name, const char *must, double v)
{
    PyObject *f = PyFloat_FromDouble(v);
    if (f != NULL) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be %s, got %R", op, name, must, f);
        Py_DECREF(f);
    }
    return -1;
}

/* Maps a status of the core to an exception, once the GIL is held again. */
static int
check_status(const char *op, dg_status st)
{
    if (st == DG_STATUS_OK) {
        return 0;
    }
    PyErr_Format(st == DG_STATUS_ERR_NOMEM ? PyExc_MemoryError : PyExc_ValueError,
                 "%s: the core returned \"%s\" (dg_status %d)", op,
                 dg_status_str(st), (int)st);
    return -1;
}

#define NARGS(list) ((int)(sizeof(list) / sizeof((list)[0])))

/* ------------------------------------------------------------------------- */
/* Library information, GEMM                                                  */
/* ------------------------------------------------------------------------- */

static PyObject *
py_status_str(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"status", NULL};
    int s;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i:_status_str", kwlist, &s)) {
        return NULL;
    }
    return PyUnicode_FromString(dg_status_str((dg_status)s));
}

static PyObject *
py_blas_name(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    return PyUnicode_FromString(dg_blas_name());
}

static PyObject *
py_get_num_threads(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(dg_get_num_threads());
}

static PyObject *
py_set_num_threads(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n", NULL};
    int n;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i:_set_num_threads", kwlist, &n)) {
        return NULL;
    }
    if (n < 1) {
        PyErr_Format(PyExc_ValueError, "_set_num_threads: n must be >= 1, got %d", n);
        return NULL;
    }
    dg_set_num_threads(n);
    Py_RETURN_NONE;
}

static PyObject *
py_few_sparse_share(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"share", NULL};
    PyObject *arg = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:_few_sparse_share", kwlist, &arg)) {
        return NULL;
    }
    double share = Py_NAN;   /* None: only ask */
    if (arg != Py_None) {
        share = PyFloat_AsDouble(arg);
        if (share == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        if (!(share <= 1.0)) {
            PyErr_Format(PyExc_ValueError,
                         "_few_sparse_share: share must be <= 1 (< 0: the CPU's), got %R", arg);
            return NULL;
        }
    }
    return PyFloat_FromDouble(dg_few_sparse_share(share));
}

static PyObject *
py_few_sparse_values(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"reg", NULL};
    int reg;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i:_few_sparse_values", kwlist, &reg)) {
        return NULL;
    }
    if (reg != 0 && reg != 1 && reg != -1) {
        PyErr_Format(PyExc_ValueError,
                     "_few_sparse_values: reg must be 0, 1 or -1 (the CPU's), got %d", reg);
        return NULL;
    }
    return PyLong_FromLong(dg_few_sparse_values(reg));
}

typedef dg_status (*gemm_fn)(int, int, int, int, int, float, const float *, int,
                             const float *, int, float, float *, int);

/* C = alpha * op(A) @ op(B) + beta * C on 2-D arrays (M, N, K may be 0), by fn,
 * or, when fn is NULL, by dg_cblas_sgemm_threads with a trailing `threads`. */
static PyObject *
sgemm_impl(const char *op, const char *fmt, gemm_fn fn, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"transA", "transB", "alpha", "A", "B", "beta", "C", NULL};
    static char *kwlist_t[] = {"transA", "transB", "alpha", "A", "B", "beta", "C",
                               "threads", NULL};
    int transA, transB, threads = 1;
    float alpha, beta;
    dg_arg A = ARG("A"), B = ARG("B"), C = ARG("C");
    dg_arg *all[] = {&A, &B, &C};
    npy_intp eA[2] = {DG_ANY0, DG_ANY0}, eB[2], eC[2];
    int M, N, K, lda, ldb, ldc;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, fn != NULL ? kwlist : kwlist_t,
                                     &transA, &transB, &alpha,
                                     conv_input, &A, conv_input, &B, &beta,
                                     conv_output, &C, &threads)) {
        goto exit;
    }
    if (fn == NULL && threads < 1) {
        PyErr_Format(PyExc_ValueError, "%s: threads must be >= 1, got %d", op, threads);
        goto exit;
    }
    if (check_shape(&A, 2, eA, transA ? "(K, M)" : "(M, K)") < 0) {
        goto exit;
    }
    M = (int)DIM(A, transA ? 1 : 0);
    K = (int)DIM(A, transA ? 0 : 1);
    eB[0] = transB ? DG_ANY0 : K;
    eB[1] = transB ? K : DG_ANY0;
    if (check_shape(&B, 2, eB, transB ? "(N, K)" : "(K, N)") < 0) {
        goto exit;
    }
    N = (int)DIM(B, transB ? 0 : 1);
    eC[0] = M;
    eC[1] = N;
    if (check_shape(&C, 2, eC, "(M, N)") < 0 || check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    lda = DIM(A, 1) > 1 ? (int)DIM(A, 1) : 1;
    ldb = DIM(B, 1) > 1 ? (int)DIM(B, 1) : 1;
    ldc = N > 1 ? N : 1;
    Py_BEGIN_ALLOW_THREADS
    if (fn != NULL) {
        st = fn(transA, transB, M, N, K, alpha, CF32(A), lda, CF32(B), ldb, beta, F32(C), ldc);
    }
    else {
        st = dg_cblas_sgemm_threads(transA, transB, M, N, K, alpha, CF32(A), lda, CF32(B),
                                    ldb, beta, F32(C), ldc, threads);
    }
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(A.arr);
    Py_XDECREF(B.arr);
    Py_XDECREF(C.arr);
    return ret;
}

static PyObject *
py_cblas_sgemm(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return sgemm_impl("_cblas_sgemm", "ppfO&O&fO&i:_cblas_sgemm", NULL, args, kwds);
}

static PyObject *
py_sgemm(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return sgemm_impl("_sgemm", "ppfO&O&fO&:_sgemm", dg_sgemm, args, kwds);
}

static PyObject *
py_sgemm_ref(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return sgemm_impl("_sgemm_ref", "ppfO&O&fO&:_sgemm_ref", dg_sgemm_ref, args, kwds);
}

/* ------------------------------------------------------------------------- */
/* Linear                                                                     */
/* ------------------------------------------------------------------------- */

static PyObject *
py_linear_forward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_linear_forward";
    static char *kwlist[] = {"out", "inp", "weight", "bias", NULL};
    dg_arg out = ARG("out"), inp = ARG("inp"), weight = ARG("weight"), bias = ARG("bias");
    dg_arg *all[] = {&out, &inp, &weight, &bias};
    npy_intp e_inp[2] = {DG_ANY, DG_ANY}, e_w[2], e_b[1], e_out[2];
    int N, C, OC;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&O&:_linear_forward", kwlist,
                                     conv_output, &out, conv_input, &inp,
                                     conv_input, &weight, conv_input_opt, &bias)) {
        goto exit;
    }
    if (check_shape(&inp, 2, e_inp, "(N, C)") < 0) {
        goto exit;
    }
    N = (int)DIM(inp, 0);
    C = (int)DIM(inp, 1);
    e_w[0] = DG_ANY;
    e_w[1] = C;
    if (check_shape(&weight, 2, e_w, "(OC, C)") < 0) {
        goto exit;
    }
    OC = (int)DIM(weight, 0);
    e_b[0] = OC;
    e_out[0] = N;
    e_out[1] = OC;
    if ((bias.arr != NULL && check_shape(&bias, 1, e_b, "(OC,)") < 0) ||
        check_shape(&out, 2, e_out, "(N, OC)") < 0 ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_linear_forward(F32(out), CF32(inp), CF32(weight), CF32(bias), N, C, OC);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(out.arr);
    Py_XDECREF(inp.arr);
    Py_XDECREF(weight.arr);
    Py_XDECREF(bias.arr);
    return ret;
}

static PyObject *
py_linear_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_linear_backward";
    static char *kwlist[] = {"dinp", "dweight", "dbias", "dout", "inp", "weight", NULL};
    dg_arg dinp = ARG("dinp"), dweight = ARG("dweight"), dbias = ARG("dbias"),
           dout = ARG("dout"), inp = ARG("inp"), weight = ARG("weight");
    dg_arg *all[] = {&dinp, &dweight, &dbias, &dout, &inp, &weight};
    npy_intp e_inp[2] = {DG_ANY, DG_ANY}, e_w[2], e_b[1], e_dout[2];
    int N, C, OC;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&O&O&O&:_linear_backward", kwlist,
                                     conv_output_opt, &dinp, conv_output_opt, &dweight,
                                     conv_output_opt, &dbias, conv_input, &dout,
                                     conv_input, &inp, conv_input, &weight)) {
        goto exit;
    }
    if (check_shape(&inp, 2, e_inp, "(N, C)") < 0) {
        goto exit;
    }
    N = (int)DIM(inp, 0);
    C = (int)DIM(inp, 1);
    e_w[0] = DG_ANY;
    e_w[1] = C;
    if (check_shape(&weight, 2, e_w, "(OC, C)") < 0) {
        goto exit;
    }
    OC = (int)DIM(weight, 0);
    e_b[0] = OC;
    e_dout[0] = N;
    e_dout[1] = OC;
    if (check_shape(&dout, 2, e_dout, "(N, OC)") < 0 ||
        (dinp.arr != NULL && check_like(&dinp, &inp) < 0) ||
        (dweight.arr != NULL && check_like(&dweight, &weight) < 0) ||
        (dbias.arr != NULL && check_shape(&dbias, 1, e_b, "(OC,)") < 0) ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_linear_backward(F32(dinp), F32(dweight), F32(dbias), CF32(dout), CF32(inp),
                            CF32(weight), N, C, OC);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(dinp.arr);
    Py_XDECREF(dweight.arr);
    Py_XDECREF(dbias.arr);
    Py_XDECREF(dout.arr);
    Py_XDECREF(inp.arr);
    Py_XDECREF(weight.arr);
    return ret;
}

/* ------------------------------------------------------------------------- */
/* Convolution and transposed convolution                                     */
/* ------------------------------------------------------------------------- */

typedef struct {
    int N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW;
} conv_geom;

/* ------------------------------------------------------------------------- */
/* Prepared calls                                                             */
/* ------------------------------------------------------------------------- */

typedef dg_status (*conv_fwd_fn)(float *, float *, const float *, const float *,
                                 const float *, int, int, int, int, int, int, int,
                                 int, int, int, int, int, int);
typedef dg_status (*act_fwd_fn)(float *, const float *, size_t);
typedef dg_status (*leaky_fwd_fn)(float *, const float *, float, size_t);

/* A forward op's C call, its arguments converted and checked: what a binding
 * runs, or keeps in a prepared call (run_or_keep). */
typedef struct dg_call dg_call;
struct dg_call {
    dg_status (*run)(const dg_call *c);
    union {
        struct {   /* act_forward_impl */
            act_fwd_fn fn;
            leaky_fwd_fn leaky;
            float *out;
            const float *inp;
            float slope;
            size_t n;
        } act;
        struct {   /* conv_forward_impl */
            conv_fwd_fn fn;
            float *out, *workspace, *col;
            const float *inp, *weight, *bias;
            conv_geom g;
            int act;
            float slope;
        } conv;
        struct {   /* _linear_bn_convt_forward */
            float *out, *lin, *hid, *workspace;
            const float *z, *lweight, *lbias, *running_mean, *running_var, *gamma, *beta,
                *weight, *bias, *running_mean2, *running_var2, *gamma2, *beta2, *packed,
                *scale;
            conv_geom g;
            int K, act, act2;
            float eps, slope, eps2, slope2;
        } head;
    } u;
};

#define DG_KEEP_MAX 24   /* the most arrays a binding that can be prepared takes */

/* A prepared call (_core._prepare): a forward op's call with its arguments
 * converted and checked once, and a reference to each of its arrays. Calling it
 * with no arguments runs the op again on those arrays, on what they hold then,
 * without the parsing and checks (a plan that repeats the same calls:
 * Network.predict). Whatever is done to the arrays meanwhile, the memory it
 * reads and writes stays theirs: it holds references, NumPy resizes no array
 * that has them, and a shape set in place keeps the size. */
typedef struct {
    PyObject_HEAD
    const char *op;   /* the binding's name; NULL until a call is kept */
    dg_call call;
    int narrs;
    PyArrayObject *arrs[DG_KEEP_MAX];
} dg_prepared;

/* Runs c with the GIL released: None, or the exception its status maps to. */
static PyObject *
run_call(const char *op, const dg_call *c)
{
    dg_status st;

    Py_BEGIN_ALLOW_THREADS
    st = c->run(c);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* A binding's last step once its arguments are checked: runs c (keep NULL), or
 * keeps it in keep with the references of all (moved: the binding's exit
 * releases the rest) and returns None. Keeps nothing when an input is a copy
 * (conv_input), which later writes into the array given would not reach:
 * _prepare then returns None. */
static PyObject *
run_or_keep(const char *op, const dg_call *c, dg_arg *const *all, int n, dg_prepared *keep)
{
    if (keep == NULL) {
        return run_call(op, c);
    }
    for (int i = 0; i < n; i++) {
        if (all[i]->copied) {
            Py_RETURN_NONE;
        }
    }
    if (n > DG_KEEP_MAX) {
        PyErr_Format(PyExc_SystemError, "%s: %d arrays, a prepared call holds %d", op, n,
                     DG_KEEP_MAX);
        return NULL;
    }
    keep->op = op;
    keep->call = *c;
    for (int i = 0; i < n; i++) {
        if (all[i]->arr != NULL) {
            keep->arrs[keep->narrs++] = all[i]->arr;
            all[i]->arr = NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
prepared_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    dg_prepared *p = (dg_prepared *)self;

    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_Format(PyExc_TypeError, "prepared %s takes no arguments", p->op);
        return NULL;
    }
    return run_call(p->op, &p->call);
}

static void
prepared_dealloc(PyObject *self)
{
    dg_prepared *p = (dg_prepared *)self;

    for (int i = 0; i < p->narrs; i++) {
        Py_DECREF(p->arrs[i]);
    }
    Py_TYPE(self)->tp_free(self);
}

static PyObject *
prepared_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<prepared %s>", ((dg_prepared *)self)->op);
}

/* A binding _prepare can keep: prep<name>(args, kwds, keep) runs the call (keep
 * NULL) or keeps it (run_or_keep); py<name>, the binding, runs it. */
#define PREPARABLE(name, impl_call)                                                    \
    static PyObject *prep##name(PyObject *args, PyObject *kwds, dg_prepared *keep)      \
    {                                                                                   \
        return impl_call;                                                               \
    }                                                                                   \
    static PyObject *py##name(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds) \
    {                                                                                   \
        return prep##name(args, kwds, NULL);                                            \
    }

static PyTypeObject dg_prepared_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "distgan._core.Prepared",
    .tp_basicsize = sizeof(dg_prepared),
    .tp_dealloc = prepared_dealloc,
    .tp_repr = prepared_repr,
    .tp_call = prepared_call,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A forward op's call, its arguments checked once (_core._prepare); "
              "call it with no arguments to run it again.",
};

/* Validates a conv2d (transposed = 0) or conv_transpose2d (1) geometry and
 * sets *ws to its workspace size in floats. `what` names the output for the
 * messages ("out", "dout", or "the geometry" for _*_workspace_size). Checks, in
 * this order: sizes >= 1, stride >= 1, padding >= 0; OH/OW against the output
 * size formula of distgan.h; the sizes the C code holds in an int (padded
 * extents, the rows and columns of the im2col matrix); the workspace size. */
static int
conv_check(const char *op, int transposed, const conv_geom *g, const char *what,
           size_t *ws)
{
    long long lo_h, lo_w, hi_h, hi_w, f[3];
    int dummy;

    if (g->N < 1 || g->C < 1 || g->H < 1 || g->W < 1 || g->OC < 1 || g->KH < 1 ||
        g->KW < 1 || g->OH < 1 || g->OW < 1) {
        PyErr_Format(PyExc_ValueError,
                     "%s: N, C, H, W, OC, KH, KW, OH, OW must be >= 1, got "
                     "%d, %d, %d, %d, %d, %d, %d, %d, %d", op, g->N, g->C, g->H,
                     g->W, g->OC, g->KH, g->KW, g->OH, g->OW);
        return -1;
    }
    if (g->SH < 1 || g->SW < 1) {
        PyErr_Format(PyExc_ValueError, "%s: stride must be >= 1, got (%d, %d)", op,
                     g->SH, g->SW);
        return -1;
    }
    if (g->PH < 0 || g->PW < 0) {
        PyErr_Format(PyExc_ValueError, "%s: padding must be >= 0, got (%d, %d)", op,
                     g->PH, g->PW);
        return -1;
    }
    if (!transposed) {
        long long eh = (long long)g->H + 2LL * g->PH - g->KH;
        long long ew = (long long)g->W + 2LL * g->PW - g->KW;
        if (eh < 0 || ew < 0) {
            PyErr_Format(PyExc_ValueError,
                         "%s: the kernel (%d, %d) is larger than the padded input "
                         "(%lld, %lld)", op, g->KH, g->KW, (long long)g->H + 2LL * g->PH,
                         (long long)g->W + 2LL * g->PW);
            return -1;
        }
        lo_h = hi_h = eh / g->SH + 1;
        lo_w = hi_w = ew / g->SW + 1;
        if (g->OH != lo_h || g->OW != lo_w) {
            PyErr_Format(PyExc_ValueError,
                         "%s: %s has (OH, OW) = (%d, %d), expected (%lld, %lld): "
                         "conv2d gives OH = (H + 2*PH - KH) // SH + 1", op, what,
                         g->OH, g->OW, lo_h, lo_w);
            return -1;
        }
    }
    else {
        lo_h = (long long)(g->H - 1) * g->SH - 2LL * g->PH + g->KH;
        lo_w = (long long)(g->W - 1) * g->SW - 2LL * g->PW + g->KW;
        hi_h = lo_h + g->SH - 1;
        hi_w = lo_w + g->SW - 1;
        if (g->OH < lo_h || g->OH > hi_h || g->OW < lo_w || g->OW > hi_w) {
            PyErr_Format(PyExc_ValueError,
                         "%s: %s has (OH, OW) = (%d, %d), expected OH in [%lld, %lld] "
                         "and OW in [%lld, %lld]: conv_transpose2d gives OH = "
                         "(H - 1)*SH - 2*PH + KH + output_padding, "
                         "0 <= output_padding < SH", op, what, g->OH, g->OW,
                         lo_h, hi_h, lo_w, hi_w);
            return -1;
        }
    }
    /* the im2col index arithmetic of dg_conv.c runs in int over the padded image
     * (the input for conv2d, the output for conv_transpose2d) */
    f[0] = transposed ? (long long)g->OH + 2LL * g->PH : (long long)g->H + 2LL * g->PH;
    if (int_product(op, "the padded height", 1, f, &dummy) < 0) {
        return -1;
    }
    f[0] = transposed ? (long long)g->OW + 2LL * g->PW : (long long)g->W + 2LL * g->PW;
    if (int_product(op, "the padded width", 1, f, &dummy) < 0) {
        return -1;
    }
    /* the GEMM sizes: the im2col matrix is (C*KH*KW, OH*OW) for conv2d and
     * (OC*KH*KW, H*W) for conv_transpose2d */
    f[0] = transposed ? g->OC : g->C;
    f[1] = g->KH;
    f[2] = g->KW;
    if (int_product(op, transposed ? "OC*KH*KW (rows of the im2col matrix)"
                                   : "C*KH*KW (rows of the im2col matrix)",
                    3, f, &dummy) < 0) {
        return -1;
    }
    f[0] = transposed ? g->H : g->OH;
    f[1] = transposed ? g->W : g->OW;
    if (int_product(op, transposed ? "H*W (columns of the im2col matrix)"
                                   : "OH*OW (columns of the im2col matrix)",
                    2, f, &dummy) < 0) {
        return -1;
    }
    *ws = transposed
        ? dg_conv_transpose2d_workspace_size(g->N, g->C, g->H, g->W, g->OC, g->KH, g->KW,
                                             g->SH, g->SW, g->PH, g->PW, g->OH, g->OW)
        : dg_conv2d_workspace_size(g->N, g->C, g->H, g->W, g->OC, g->KH, g->KW, g->SH,
                                   g->SW, g->PH, g->PW, g->OH, g->OW);
    if (*ws == 0) {
        /* every valid geometry needs a workspace; 0 is the core's refusal */
        PyErr_Format(PyExc_ValueError,
                     "%s: the core rejected the sizes (a tensor or the workspace "
                     "would overflow)", op);
        return -1;
    }
    return 0;
}

/* The 13 geometry arguments (N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW) of
 * the workspace-size and _conv2d_direct entry points, checked as the ops check
 * them (conv_check; *ws the op's workspace floats). 0, or -1 with an exception. */
static int
parse_conv_geom(const char *op, const char *fmt, int transposed, PyObject *args,
                PyObject *kwds, conv_geom *g, size_t *ws)
{
    static char *kwlist[] = {"N", "C", "H", "W", "OC", "KH", "KW", "SH", "SW",
                             "PH", "PW", "OH", "OW", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, kwlist, &g->N, &g->C, &g->H, &g->W,
                                     &g->OC, &g->KH, &g->KW, &g->SH, &g->SW, &g->PH, &g->PW,
                                     &g->OH, &g->OW)) {
        return -1;
    }
    return conv_check(op, transposed, g, "the geometry", ws);
}

static PyObject *
conv_workspace_size_impl(const char *op, const char *fmt, int transposed,
                         PyObject *args, PyObject *kwds)
{
    conv_geom g;
    size_t ws;
    if (parse_conv_geom(op, fmt, transposed, args, kwds, &g, &ws) < 0) {
        return NULL;
    }
    return PyLong_FromSize_t(ws);
}

static PyObject *
py_conv2d_workspace_size(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return conv_workspace_size_impl("_conv2d_workspace_size",
                                    "iiiiiiiiiiiii:_conv2d_workspace_size", 0, args, kwds);
}

/* A yes/no question about a conv2d geometry (dg_conv2d_direct, dg_conv2d_act_fits),
 * the geometry checked as the ops check it. */
typedef int (*conv_query_fn)(int, int, int, int, int, int, int, int, int, int, int, int,
                             int);

static PyObject *
conv_query_impl(const char *op, const char *fmt, conv_query_fn fn, PyObject *args,
                PyObject *kwds)
{
    conv_geom g;
    size_t ws;
    if (parse_conv_geom(op, fmt, 0, args, kwds, &g, &ws) < 0) {
        return NULL;
    }
    return PyBool_FromLong(fn(g.N, g.C, g.H, g.W, g.OC, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW,
                              g.OH, g.OW));
}

static PyObject *
py_conv2d_direct(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return conv_query_impl("_conv2d_direct", "iiiiiiiiiiiii:_conv2d_direct",
                           dg_conv2d_direct, args, kwds);
}

static PyObject *
py_conv2d_act_fits(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return conv_query_impl("_conv2d_act_fits", "iiiiiiiiiiiii:_conv2d_act_fits",
                           dg_conv2d_act_fits, args, kwds);
}

static PyObject *
py_conv_transpose2d_workspace_size(PyObject *Py_UNUSED(self), PyObject *args,
                                   PyObject *kwds)
{
    return conv_workspace_size_impl("_conv_transpose2d_workspace_size",
                                    "iiiiiiiiiiiii:_conv_transpose2d_workspace_size", 1,
                                    args, kwds);
}

/* Shapes of inp, weight, bias (may be NULL) and out/dout, then the geometry and
 * the workspace size. */
static int
conv_shapes(const char *op, int transposed, const dg_arg *inp, const dg_arg *weight,
            const dg_arg *bias, const dg_arg *out, const dg_arg *workspace,
            conv_geom *g)
{
    npy_intp e_inp[4] = {DG_ANY, DG_ANY, DG_ANY, DG_ANY}, e_w[4], e_b[1], e_out[4];
    size_t ws;

    if (check_shape(inp, 4, e_inp, "(N, C, H, W)") < 0) {
        return -1;
    }
    g->N = (int)PyArray_DIM(inp->arr, 0);
    g->C = (int)PyArray_DIM(inp->arr, 1);
    g->H = (int)PyArray_DIM(inp->arr, 2);
    g->W = (int)PyArray_DIM(inp->arr, 3);
    e_w[0] = transposed ? g->C : DG_ANY;
    e_w[1] = transposed ? DG_ANY : g->C;
    e_w[2] = e_w[3] = DG_ANY;
    if (check_shape(weight, 4, e_w, transposed ? "(C, OC, KH, KW)" : "(OC, C, KH, KW)") < 0) {
        return -1;
    }
    g->OC = (int)PyArray_DIM(weight->arr, transposed ? 1 : 0);
    g->KH = (int)PyArray_DIM(weight->arr, 2);
    g->KW = (int)PyArray_DIM(weight->arr, 3);
    e_b[0] = g->OC;
    if (bias != NULL && bias->arr != NULL && check_shape(bias, 1, e_b, "(OC,)") < 0) {
        return -1;
    }
    e_out[0] = g->N;
    e_out[1] = g->OC;
    e_out[2] = e_out[3] = DG_ANY;
    if (check_shape(out, 4, e_out, "(N, OC, OH, OW)") < 0) {
        return -1;
    }
    g->OH = (int)PyArray_DIM(out->arr, 2);
    g->OW = (int)PyArray_DIM(out->arr, 3);
    if (conv_check(op, transposed, g, out->name, &ws) < 0) {
        return -1;
    }
    if (SIZE(*workspace) < ws) {
        PyErr_Format(PyExc_ValueError,
                     "%s: workspace has %zd floats, expected at least %zu "
                     "(%s_workspace_size)", op, (Py_ssize_t)SIZE(*workspace), ws,
                     transposed ? "_conv_transpose2d" : "_conv2d");
        return -1;
    }
    return 0;
}

/* act and slope of a fused activation (dg_batchnorm_act_*, dg_conv2d_act_*) */
static int
check_act(const char *op, int act, float slope)
{
    if (act != DG_ACT_NONE && act != DG_ACT_RELU && act != DG_ACT_LEAKY_RELU) {
        PyErr_Format(PyExc_ValueError,
                     "%s: act must be 0 (none), 1 (relu) or 2 (leaky_relu), got %d", op, act);
        return -1;
    }
    if (act == DG_ACT_LEAKY_RELU && slope < 0.0f) {
        return bad_scalar(op, "slope", ">= 0 (the output's sign must be the input's)", slope);
    }
    return 0;
}

/* The fused forward's output, which the backward of a fused activation needs. */
static int
check_fused_out(const char *op, dg_arg *out, dg_arg *inp, int act)
{
    if (act == DG_ACT_NONE) {
        return 0;
    }
    if (out->arr == NULL) {
        PyErr_Format(PyExc_ValueError,
                     "%s: out (the fused forward's output) is required when act is set", op);
        return -1;
    }
    return check_like(out, inp);
}

/* A fused activation (act, not DG_ACT_NONE) of _conv2d_forward / _conv2d_backward:
 * where the core fuses it (dg_conv2d_act_fits), and not with a kept col. */
static int
conv_act(const char *op, int act, float slope, const dg_arg *col, const conv_geom *g)
{
    if (check_act(op, act, slope) < 0) {
        return -1;
    }
    if (act == DG_ACT_NONE) {
        return 0;
    }
    if (col->arr != NULL) {
        PyErr_Format(PyExc_ValueError, "%s: act cannot be fused with a kept col", op);
        return -1;
    }
    if (!dg_conv2d_act_fits(g->N, g->C, g->H, g->W, g->OC, g->KH, g->KW, g->SH, g->SW,
                            g->PH, g->PW, g->OH, g->OW)) {
        PyErr_Format(PyExc_ValueError,
                     "%s: act is fused only where _conv2d_act_fits is True for the "
                     "geometry (one input channel, 4x4 stride-2 padding-1, AVX-512)", op);
        return -1;
    }
    return 0;
}

typedef dg_status (*conv_bwd_fn)(float *, float *, float *, float *, const float *,
                                 const float *, const float *, int, int, int, int,
                                 int, int, int, int, int, int, int, int, int);

/* The optional col of _conv2d_forward / _conv2d_backward: the whole batch's
 * im2col matrix, (C*KH*KW, N*OH*OW), kept by the forward for the backward's
 * weight gradient (dg_conv2d_forward_keep). */
static int
check_col(const char *op, const dg_arg *col, const conv_geom *g)
{
    npy_intp e[2];
    if (col->arr == NULL) {
        return 0;
    }
    if ((long long)g->N * g->OH * g->OW > INT_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "%s: N*OH*OW = %lld is too large for a kept col matrix "
                     "(at most %d columns)", op, (long long)g->N * g->OH * g->OW, INT_MAX);
        return -1;
    }
    e[0] = (npy_intp)g->C * g->KH * g->KW;
    e[1] = (npy_intp)g->N * g->OH * g->OW;
    return check_shape(col, 2, e, "(C*KH*KW, N*OH*OW)");
}

static dg_status
run_conv(const dg_call *c)
{
    const conv_geom *g = &c->u.conv.g;

    if (c->u.conv.act != DG_ACT_NONE) {
        return dg_conv2d_act_forward(c->u.conv.out, c->u.conv.workspace, c->u.conv.inp,
                                     c->u.conv.weight, c->u.conv.bias, g->N, g->C, g->H, g->W,
                                     g->OC, g->KH, g->KW, g->SH, g->SW, g->PH, g->PW, g->OH,
                                     g->OW, c->u.conv.act, c->u.conv.slope);
    }
    if (c->u.conv.col != NULL) {
        return dg_conv2d_forward_keep(c->u.conv.out, c->u.conv.col, c->u.conv.workspace,
                                      c->u.conv.inp, c->u.conv.weight, c->u.conv.bias, g->N,
                                      g->C, g->H, g->W, g->OC, g->KH, g->KW, g->SH, g->SW,
                                      g->PH, g->PW, g->OH, g->OW);
    }
    return c->u.conv.fn(c->u.conv.out, c->u.conv.workspace, c->u.conv.inp, c->u.conv.weight,
                        c->u.conv.bias, g->N, g->C, g->H, g->W, g->OC, g->KH, g->KW, g->SH,
                        g->SW, g->PH, g->PW, g->OH, g->OW);
}

static PyObject *
conv_forward_impl(const char *op, const char *fmt, int transposed, conv_fwd_fn fn,
                  PyObject *args, PyObject *kwds, dg_prepared *keep)
{
    /* col (conv2d only: fmt ends "|O&$if") keeps the im2col matrix for the backward;
     * act and slope fuse an activation after it (dg_conv2d_act_forward) */
    static char *kwlist[] = {"out", "workspace", "inp", "weight", "bias",
                             "SH", "SW", "PH", "PW", "col", "act", "slope", NULL};
    static char *kwlist_t[] = {"out", "workspace", "inp", "weight", "bias",
                               "SH", "SW", "PH", "PW", NULL};
    dg_arg out = ARG("out"), workspace = ARG("workspace"), inp = ARG("inp"),
           weight = ARG("weight"), bias = ARG("bias"), col = ARG("col");
    dg_arg *all[] = {&out, &workspace, &inp, &weight, &bias, &col};
    conv_geom g;
    int act = DG_ACT_NONE;
    float slope = 0.0f;
    PyObject *ret = NULL;
    dg_call c = {run_conv, {.act = {NULL}}};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, transposed ? kwlist_t : kwlist,
                                     conv_output, &out,
                                     conv_output, &workspace, conv_input, &inp,
                                     conv_input, &weight, conv_input_opt, &bias,
                                     &g.SH, &g.SW, &g.PH, &g.PW, conv_output_opt, &col,
                                     &act, &slope)) {
        goto exit;
    }
    if (conv_shapes(op, transposed, &inp, &weight, &bias, &out, &workspace, &g) < 0 ||
        check_col(op, &col, &g) < 0 || conv_act(op, act, slope, &col, &g) < 0 ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    c.u.conv.fn = fn;
    c.u.conv.out = F32(out);
    c.u.conv.workspace = F32(workspace);
    c.u.conv.col = F32(col);
    c.u.conv.inp = CF32(inp);
    c.u.conv.weight = CF32(weight);
    c.u.conv.bias = CF32(bias);
    c.u.conv.g = g;
    c.u.conv.act = act;
    c.u.conv.slope = slope;
    ret = run_or_keep(op, &c, all, NARGS(all), keep);
exit:
    Py_XDECREF(out.arr);
    Py_XDECREF(workspace.arr);
    Py_XDECREF(inp.arr);
    Py_XDECREF(weight.arr);
    Py_XDECREF(bias.arr);
    Py_XDECREF(col.arr);
    return ret;
}

static PyObject *
conv_backward_impl(const char *op, const char *fmt, int transposed, conv_bwd_fn fn,
                   PyObject *args, PyObject *kwds)
{
    /* col (conv2d only: fmt ends "|O&$O&if"): the matrix _conv2d_forward kept; out,
     * act and slope: the fused forward's output and activation (dout is the
     * gradient of that output; dg_conv2d_act_backward) */
    static char *kwlist[] = {"dinp", "dweight", "dbias", "workspace", "dout", "inp",
                             "weight", "SH", "SW", "PH", "PW", "col", "out", "act", "slope",
                             NULL};
    static char *kwlist_t[] = {"dinp", "dweight", "dbias", "workspace", "dout", "inp",
                               "weight", "SH", "SW", "PH", "PW", NULL};
    dg_arg dinp = ARG("dinp"), dweight = ARG("dweight"), dbias = ARG("dbias"),
           workspace = ARG("workspace"), dout = ARG("dout"), inp = ARG("inp"),
           weight = ARG("weight"), col = ARG("col"), out = ARG("out");
    dg_arg *all[] = {&dinp, &dweight, &dbias, &workspace, &dout, &inp, &weight, &col, &out};
    npy_intp e_b[1];
    conv_geom g;
    int act = DG_ACT_NONE;
    float slope = 0.0f;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, transposed ? kwlist_t : kwlist,
                                     conv_output_opt, &dinp,
                                     conv_output_opt, &dweight, conv_output_opt, &dbias,
                                     conv_output, &workspace, conv_input, &dout,
                                     conv_input, &inp, conv_input, &weight,
                                     &g.SH, &g.SW, &g.PH, &g.PW, conv_input_opt, &col,
                                     conv_input_opt, &out, &act, &slope)) {
        goto exit;
    }
    if (conv_shapes(op, transposed, &inp, &weight, NULL, &dout, &workspace, &g) < 0 ||
        check_col(op, &col, &g) < 0 || conv_act(op, act, slope, &col, &g) < 0 ||
        check_fused_out(op, &out, &dout, act) < 0) {
        goto exit;
    }
    e_b[0] = g.OC;
    if ((dinp.arr != NULL && check_like(&dinp, &inp) < 0) ||
        (dweight.arr != NULL && check_like(&dweight, &weight) < 0) ||
        (dbias.arr != NULL && check_shape(&dbias, 1, e_b, "(OC,)") < 0) ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    if (act != DG_ACT_NONE) {
        st = dg_conv2d_act_backward(F32(dinp), F32(dweight), F32(dbias), F32(workspace),
                                    CF32(dout), CF32(out), CF32(inp), CF32(weight), g.N, g.C,
                                    g.H, g.W, g.OC, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW, g.OH,
                                    g.OW, act, slope);
    } else if (col.arr != NULL) {
        st = dg_conv2d_backward_kept(F32(dinp), F32(dweight), F32(dbias), F32(workspace),
                                     CF32(col), CF32(dout), CF32(inp), CF32(weight), g.N,
                                     g.C, g.H, g.W, g.OC, g.KH, g.KW, g.SH, g.SW, g.PH,
                                     g.PW, g.OH, g.OW);
    } else {
        st = fn(F32(dinp), F32(dweight), F32(dbias), F32(workspace), CF32(dout), CF32(inp),
                CF32(weight), g.N, g.C, g.H, g.W, g.OC, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW,
                g.OH, g.OW);
    }
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(dinp.arr);
    Py_XDECREF(dweight.arr);
    Py_XDECREF(dbias.arr);
    Py_XDECREF(workspace.arr);
    Py_XDECREF(dout.arr);
    Py_XDECREF(inp.arr);
    Py_XDECREF(weight.arr);
    Py_XDECREF(col.arr);
    Py_XDECREF(out.arr);
    return ret;
}

PREPARABLE(_conv2d_forward,
           conv_forward_impl("_conv2d_forward", "O&O&O&O&O&iiii|O&$if:_conv2d_forward", 0,
                             dg_conv2d_forward, args, kwds, keep))

static PyObject *
py_conv2d_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return conv_backward_impl("_conv2d_backward", "O&O&O&O&O&O&O&iiii|O&$O&if:_conv2d_backward",
                              0, dg_conv2d_backward, args, kwds);
}

PREPARABLE(_conv_transpose2d_forward,
           conv_forward_impl("_conv_transpose2d_forward",
                             "O&O&O&O&O&iiii:_conv_transpose2d_forward", 1,
                             dg_conv_transpose2d_forward, args, kwds, keep))

static PyObject *
py_conv_transpose2d_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return conv_backward_impl("_conv_transpose2d_backward",
                              "O&O&O&O&O&O&O&iiii:_conv_transpose2d_backward", 1,
                              dg_conv_transpose2d_backward, args, kwds);
}

/* ------------------------------------------------------------------------- */
/* Batch normalisation                                                        */
/* ------------------------------------------------------------------------- */

/* inp is (N, C, *): N, C and HW (the product of the remaining sizes) must each
 * be >= 1 and fit an int. */
static int
bn_sizes(const char *op, const dg_arg *inp, int *N, int *C, int *HW)
{
    int nd = PyArray_NDIM(inp->arr);
    const npy_intp *d = PyArray_DIMS(inp->arr);
    long long f[NPY_MAXDIMS];

    if (nd < 2) {
        return shape_error(inp, "(N, C, *)", "expected at least 2 dimensions", 0, NULL);
    }
    for (int i = 0; i < nd; i++) {
        if (d[i] < 1) {
            return shape_error(inp, "(N, C, *)", "every size must be >= 1", 0, NULL);
        }
        if (d[i] > INT_MAX) {
            return shape_error(inp, "(N, C, *)", "a size would overflow a C int", 0, NULL);
        }
        if (i >= 2) {
            f[i - 2] = d[i];
        }
    }
    *N = (int)d[0];
    *C = (int)d[1];
    return int_product(op, "HW (the product of the sizes after N, C)", nd - 2, f, HW);
}

/* Each non-None array of the list must be (C,). */
static int
bn_vectors(dg_arg *const *list, int n, int C)
{
    npy_intp e[1] = {C};
    for (int i = 0; i < n; i++) {
        if (list[i]->arr != NULL && check_shape(list[i], 1, e, "(C,)") < 0) {
            return -1;
        }
    }
    return 0;
}

static int
bn_eps(const char *op, float eps)
{
    if (!(eps > 0.0f) || isinf(eps)) {
        return bad_scalar(op, "eps", "finite and > 0", eps);
    }
    return 0;
}

static PyObject *
py_batchnorm_forward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_batchnorm_forward";
    static char *kwlist[] = {"out", "mean", "rstd", "running_mean", "running_var", "inp",
                             "gamma", "beta", "eps", "momentum", "act", "slope", NULL};
    dg_arg out = ARG("out"), mean = ARG("mean"), rstd = ARG("rstd"),
           running_mean = ARG("running_mean"), running_var = ARG("running_var"),
           inp = ARG("inp"), gamma = ARG("gamma"), beta = ARG("beta");
    dg_arg *all[] = {&out, &mean, &rstd, &running_mean, &running_var, &inp, &gamma, &beta};
    dg_arg *vec[] = {&mean, &rstd, &running_mean, &running_var, &gamma, &beta};
    float eps, momentum, slope = 0.0f;
    int N, C, HW, act = DG_ACT_NONE;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&O&O&O&O&O&ff|$if:_batchnorm_forward",
                                     kwlist, conv_output, &out, conv_output, &mean,
                                     conv_output, &rstd, conv_output_opt, &running_mean,
                                     conv_output_opt, &running_var, conv_input, &inp,
                                     conv_input_opt, &gamma, conv_input_opt, &beta,
                                     &eps, &momentum, &act, &slope)) {
        goto exit;
    }
    if (bn_sizes(op, &inp, &N, &C, &HW) < 0 || check_like(&out, &inp) < 0 ||
        bn_vectors(vec, NARGS(vec), C) < 0 || bn_eps(op, eps) < 0 ||
        check_act(op, act, slope) < 0) {
        goto exit;
    }
    if (!(momentum >= 0.0f && momentum <= 1.0f)) {
        bad_scalar(op, "momentum", "in [0, 1]", momentum);
        goto exit;
    }
    if ((long long)N * HW < 2) {
        PyErr_Format(PyExc_ValueError,
                     "%s: training mode needs more than 1 value per channel, got "
                     "N*HW = %lld", op, (long long)N * HW);
        goto exit;
    }
    if (check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_batchnorm_act_forward(F32(out), F32(mean), F32(rstd), F32(running_mean),
                                  F32(running_var), CF32(inp), CF32(gamma), CF32(beta), N,
                                  C, HW, eps, momentum, act, slope);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(out.arr);
    Py_XDECREF(mean.arr);
    Py_XDECREF(rstd.arr);
    Py_XDECREF(running_mean.arr);
    Py_XDECREF(running_var.arr);
    Py_XDECREF(inp.arr);
    Py_XDECREF(gamma.arr);
    Py_XDECREF(beta.arr);
    return ret;
}

static PyObject *
py_batchnorm_forward_eval(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_batchnorm_forward_eval";
    static char *kwlist[] = {"out", "inp", "running_mean", "running_var", "gamma", "beta",
                             "eps", "act", "slope", NULL};
    dg_arg out = ARG("out"), inp = ARG("inp"), running_mean = ARG("running_mean"),
           running_var = ARG("running_var"), gamma = ARG("gamma"), beta = ARG("beta");
    dg_arg *all[] = {&out, &inp, &running_mean, &running_var, &gamma, &beta};
    dg_arg *vec[] = {&running_mean, &running_var, &gamma, &beta};
    float eps, slope = 0.0f;
    int N, C, HW, act = DG_ACT_NONE;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&O&O&O&f|$if:_batchnorm_forward_eval",
                                     kwlist, conv_output, &out, conv_input, &inp,
                                     conv_input, &running_mean, conv_input, &running_var,
                                     conv_input_opt, &gamma, conv_input_opt, &beta, &eps,
                                     &act, &slope)) {
        goto exit;
    }
    if (bn_sizes(op, &inp, &N, &C, &HW) < 0 || check_like(&out, &inp) < 0 ||
        bn_vectors(vec, NARGS(vec), C) < 0 || bn_eps(op, eps) < 0 ||
        check_act(op, act, slope) < 0 || check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_batchnorm_act_forward_eval(F32(out), CF32(inp), CF32(running_mean),
                                       CF32(running_var), CF32(gamma), CF32(beta), N, C, HW,
                                       eps, act, slope);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(out.arr);
    Py_XDECREF(inp.arr);
    Py_XDECREF(running_mean.arr);
    Py_XDECREF(running_var.arr);
    Py_XDECREF(gamma.arr);
    Py_XDECREF(beta.arr);
    return ret;
}

static PyObject *
py_convt_few_pack(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_convt_few_pack";
    static char *kwlist[] = {"packed", "weight", NULL};
    dg_arg packed = ARG("packed"), weight = ARG("weight");
    dg_arg *all[] = {&packed, &weight};
    npy_intp e_w[4] = {DG_ANY, DG_ANY, 4, 4}, e_pk[1];
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&:_convt_few_pack", kwlist, conv_output,
                                     &packed, conv_input, &weight)) {
        goto exit;
    }
    if (check_shape(&weight, 4, e_w, "(C, OC, 4, 4)") < 0) {
        goto exit;
    }
    if (DIM(weight, 0) > INT_MAX || DIM(weight, 1) > INT_MAX ||
        (e_pk[0] = (npy_intp)dg_convt_few_packed_floats((int)DIM(weight, 0),
                                                        (int)DIM(weight, 1))) == 0) {
        PyErr_Format(PyExc_ValueError, "%s: weight (C, OC, 4, 4) needs OC a multiple of 4 "
                     "and C, OC >= 1, got (%zd, %zd, 4, 4)", op, (Py_ssize_t)DIM(weight, 0),
                     (Py_ssize_t)DIM(weight, 1));
        goto exit;
    }
    if (check_shape(&packed, 1, e_pk, "(C*OC*16 + 16,)") < 0 ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_convt_few_pack(F32(packed), CF32(weight), (int)DIM(weight, 0), (int)DIM(weight, 1));
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = PyBool_FromLong(F32(packed)[SIZE(packed) - 1] == 1.0f);
exit:
    Py_XDECREF(packed.arr);
    Py_XDECREF(weight.arr);
    return ret;
}

static PyObject *
py_bn_eval_scale(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_bn_eval_scale";
    static char *kwlist[] = {"scale", "running_var", "gamma", "eps", NULL};
    dg_arg scale = ARG("scale"), running_var = ARG("running_var"), gamma = ARG("gamma");
    dg_arg *all[] = {&scale, &running_var, &gamma};
    dg_arg *vec[] = {&running_var, &gamma};
    float eps;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&f:_bn_eval_scale", kwlist,
                                     conv_output, &scale, conv_input, &running_var,
                                     conv_input_opt, &gamma, &eps)) {
        goto exit;
    }
    if (PyArray_NDIM(scale.arr) != 1 || SIZE(scale) < 1 || SIZE(scale) > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: scale must be 1-D with 1 to %d elements", op,
                     INT_MAX);
        goto exit;
    }
    if (bn_vectors(vec, NARGS(vec), (int)SIZE(scale)) < 0 || bn_eps(op, eps) < 0 ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_batchnorm_eval_scale(F32(scale), CF32(running_var), CF32(gamma),
                                 (int)SIZE(scale), eps);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    for (size_t i = 0; i < NARGS(all); i++) {
        Py_XDECREF(all[i]->arr);
    }
    return ret;
}

static dg_status
run_head(const dg_call *c)
{
    const conv_geom *g = &c->u.head.g;

    return dg_linear_bn_convt_forward(
        c->u.head.out, c->u.head.lin, c->u.head.hid, c->u.head.workspace, c->u.head.z,
        c->u.head.lweight, c->u.head.lbias, c->u.head.running_mean, c->u.head.running_var,
        c->u.head.gamma, c->u.head.beta, c->u.head.eps, c->u.head.act, c->u.head.slope,
        c->u.head.weight, c->u.head.bias, g->N, c->u.head.K, g->C, g->H, g->W, g->OC, g->KH,
        g->KW, g->SH, g->SW, g->PH, g->PW, g->OH, g->OW, c->u.head.running_mean2,
        c->u.head.running_var2, c->u.head.gamma2, c->u.head.beta2, c->u.head.eps2,
        c->u.head.act2, c->u.head.slope2, c->u.head.packed, c->u.head.scale);
}

static PyObject *
prep_linear_bn_convt_forward(PyObject *args, PyObject *kwds, dg_prepared *keep)
{
    static const char op[] = "_linear_bn_convt_forward";
    static char *kwlist[] = {"out", "lin", "hid", "workspace", "z", "lweight", "lbias",
                             "running_mean", "running_var", "gamma", "beta", "eps", "weight",
                             "bias", "SH", "SW", "PH", "PW", "act", "slope", "running_mean2",
                             "running_var2", "gamma2", "beta2", "eps2", "act2", "slope2",
                             "packed", "scale", NULL};
    dg_arg out = ARG("out"), lin = ARG("lin"), hid = ARG("hid"), packed = ARG("packed"),
           scale = ARG("scale"),
           workspace = ARG("workspace"), z = ARG("z"), lweight = ARG("lweight"),
           lbias = ARG("lbias"), running_mean = ARG("running_mean"),
           running_var = ARG("running_var"), gamma = ARG("gamma"), beta = ARG("beta"),
           weight = ARG("weight"), bias = ARG("bias"), running_mean2 = ARG("running_mean2"),
           running_var2 = ARG("running_var2"), gamma2 = ARG("gamma2"), beta2 = ARG("beta2");
    dg_arg *all[] = {&out, &lin, &hid, &workspace, &z, &lweight, &lbias, &running_mean,
                     &running_var, &gamma, &beta, &weight, &bias, &running_mean2,
                     &running_var2, &gamma2, &beta2, &packed, &scale};
    dg_arg *vec[] = {&lbias, &running_mean, &running_var, &gamma, &beta, &scale};
    dg_arg *vec2[] = {&running_mean2, &running_var2, &gamma2, &beta2};
    npy_intp e_z[2] = {DG_ANY, DG_ANY}, e_lw[2], e_lin[2];
    conv_geom g;
    float eps, slope = 0.0f, eps2 = 1e-5f, slope2 = 0.0f;
    int K, F, act = DG_ACT_NONE, act2 = DG_ACT_NONE;
    PyObject *ret = NULL;
    dg_call c = {run_head, {.act = {NULL}}};

    if (!PyArg_ParseTupleAndKeywords(
            args, kwds, "O&O&O&O&O&O&O&O&O&O&O&fO&O&iiii|$ifO&O&O&O&fifO&O&:_linear_bn_convt_forward",
            kwlist, conv_output, &out, conv_output, &lin, conv_output, &hid, conv_output,
            &workspace, conv_input, &z, conv_input, &lweight, conv_input_opt, &lbias,
            conv_input, &running_mean, conv_input, &running_var, conv_input_opt, &gamma,
            conv_input_opt, &beta, &eps, conv_input, &weight, conv_input_opt, &bias, &g.SH,
            &g.SW, &g.PH, &g.PW, &act, &slope, conv_input_opt, &running_mean2, conv_input_opt,
            &running_var2, conv_input_opt, &gamma2, conv_input_opt, &beta2, &eps2, &act2,
            &slope2, conv_input_opt, &packed, conv_input_opt, &scale)) {
        goto exit;
    }
    if ((running_mean2.arr == NULL) != (running_var2.arr == NULL) ||
        (running_mean2.arr == NULL && (gamma2.arr != NULL || beta2.arr != NULL))) {
        PyErr_Format(PyExc_ValueError,
                     "%s: the second batch norm needs running_mean2 and running_var2 "
                     "together (gamma2 and beta2 only with them)", op);
        goto exit;
    }
    /* hid (N, C, H, W) is the transposed convolution's input */
    if (conv_shapes(op, 1, &hid, &weight, &bias, &out, &workspace, &g) < 0) {
        goto exit;
    }
    F = g.C * g.H * g.W;   /* conv_shapes checked that it fits an int */
    e_z[0] = g.N;
    if (check_shape(&z, 2, e_z, "(N, K)") < 0) {
        goto exit;
    }
    K = (int)DIM(z, 1);
    e_lw[0] = F;
    e_lw[1] = K;
    e_lin[0] = g.N;
    e_lin[1] = F;
    if (check_shape(&lweight, 2, e_lw, "(C*H*W, K)") < 0 ||
        check_shape(&lin, 2, e_lin, "(N, C*H*W)") < 0 || bn_vectors(vec, NARGS(vec), F) < 0 ||
        bn_eps(op, eps) < 0 || check_act(op, act, slope) < 0 ||
        bn_vectors(vec2, NARGS(vec2), g.OC) < 0 ||
        (running_mean2.arr != NULL && (bn_eps(op, eps2) < 0 || check_act(op, act2, slope2) < 0)) ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    if (packed.arr != NULL) {
        /* the layout of this weight (_convt_few_pack), flat */
        npy_intp e_pk[1] = {(npy_intp)dg_convt_few_packed_floats(g.C, g.OC)};
        if (g.KH != 4 || g.KW != 4 || e_pk[0] == 0) {
            PyErr_Format(PyExc_ValueError,
                         "%s: packed is only for a (C, OC, 4, 4) weight with OC a multiple "
                         "of 4, got (%d, %d, %d, %d)", op, g.C, g.OC, g.KH, g.KW);
            goto exit;
        }
        if (check_shape(&packed, 1, e_pk, "(C*OC*16 + 16,) from _convt_few_pack") < 0) {
            goto exit;
        }
    }
    c.u.head.out = F32(out);
    c.u.head.lin = F32(lin);
    c.u.head.hid = F32(hid);
    c.u.head.workspace = F32(workspace);
    c.u.head.z = CF32(z);
    c.u.head.lweight = CF32(lweight);
    c.u.head.lbias = CF32(lbias);
    c.u.head.running_mean = CF32(running_mean);
    c.u.head.running_var = CF32(running_var);
    c.u.head.gamma = CF32(gamma);
    c.u.head.beta = CF32(beta);
    c.u.head.weight = CF32(weight);
    c.u.head.bias = CF32(bias);
    c.u.head.running_mean2 = CF32(running_mean2);
    c.u.head.running_var2 = CF32(running_var2);
    c.u.head.gamma2 = CF32(gamma2);
    c.u.head.beta2 = CF32(beta2);
    c.u.head.packed = CF32(packed);
    c.u.head.scale = CF32(scale);
    c.u.head.g = g;
    c.u.head.K = K;
    c.u.head.act = act;
    c.u.head.act2 = act2;
    c.u.head.eps = eps;
    c.u.head.slope = slope;
    c.u.head.eps2 = eps2;
    c.u.head.slope2 = slope2;
    ret = run_or_keep(op, &c, all, NARGS(all), keep);
exit:
    for (size_t i = 0; i < NARGS(all); i++) {
        Py_XDECREF(all[i]->arr);
    }
    return ret;
}

static PyObject *
py_linear_bn_convt_forward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return prep_linear_bn_convt_forward(args, kwds, NULL);
}

static PyObject *
py_batchnorm_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_batchnorm_backward";
    static char *kwlist[] = {"dinp", "dgamma", "dbeta", "dout", "inp", "mean", "rstd",
                             "gamma", "out", "act", "slope", NULL};
    dg_arg dinp = ARG("dinp"), dgamma = ARG("dgamma"), dbeta = ARG("dbeta"),
           dout = ARG("dout"), inp = ARG("inp"), mean = ARG("mean"), rstd = ARG("rstd"),
           gamma = ARG("gamma"), out = ARG("out");
    dg_arg *all[] = {&dinp, &dgamma, &dbeta, &dout, &inp, &mean, &rstd, &gamma, &out};
    dg_arg *vec[] = {&dgamma, &dbeta, &mean, &rstd, &gamma};
    int N, C, HW, act = DG_ACT_NONE;
    float slope = 0.0f;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&O&O&O&O&O&|$O&if:_batchnorm_backward",
                                     kwlist, conv_output_opt, &dinp, conv_output_opt,
                                     &dgamma, conv_output_opt, &dbeta, conv_input, &dout,
                                     conv_input, &inp, conv_input, &mean, conv_input,
                                     &rstd, conv_input_opt, &gamma, conv_input_opt, &out,
                                     &act, &slope)) {
        goto exit;
    }
    if (bn_sizes(op, &inp, &N, &C, &HW) < 0 || check_like(&dout, &inp) < 0 ||
        (dinp.arr != NULL && check_like(&dinp, &inp) < 0) ||
        bn_vectors(vec, NARGS(vec), C) < 0 || check_act(op, act, slope) < 0 ||
        check_fused_out(op, &out, &inp, act) < 0 || check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_batchnorm_act_backward(F32(dinp), F32(dgamma), F32(dbeta), CF32(dout), CF32(out),
                                   CF32(inp), CF32(mean), CF32(rstd), CF32(gamma), N, C, HW,
                                   act, slope);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(dinp.arr);
    Py_XDECREF(dgamma.arr);
    Py_XDECREF(dbeta.arr);
    Py_XDECREF(dout.arr);
    Py_XDECREF(inp.arr);
    Py_XDECREF(mean.arr);
    Py_XDECREF(rstd.arr);
    Py_XDECREF(gamma.arr);
    Py_XDECREF(out.arr);
    return ret;
}

static PyObject *
py_batchnorm_backward_eval(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_batchnorm_backward_eval";
    static char *kwlist[] = {"dinp", "dgamma", "dbeta", "dout", "inp", "running_mean",
                             "running_var", "gamma", "eps", "out", "act", "slope", NULL};
    dg_arg dinp = ARG("dinp"), dgamma = ARG("dgamma"), dbeta = ARG("dbeta"),
           dout = ARG("dout"), inp = ARG("inp"), running_mean = ARG("running_mean"),
           running_var = ARG("running_var"), gamma = ARG("gamma"), out = ARG("out");
    dg_arg *all[] = {&dinp, &dgamma, &dbeta, &dout, &inp, &running_mean, &running_var,
                     &gamma, &out};
    dg_arg *vec[] = {&dgamma, &dbeta, &running_mean, &running_var, &gamma};
    float eps, slope = 0.0f;
    int N, C, HW, act = DG_ACT_NONE;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds,
                                     "O&O&O&O&O&O&O&O&f|$O&if:_batchnorm_backward_eval",
                                     kwlist, conv_output_opt, &dinp, conv_output_opt,
                                     &dgamma, conv_output_opt, &dbeta, conv_input, &dout,
                                     conv_input, &inp, conv_input, &running_mean,
                                     conv_input, &running_var, conv_input_opt, &gamma,
                                     &eps, conv_input_opt, &out, &act, &slope)) {
        goto exit;
    }
    if (bn_sizes(op, &inp, &N, &C, &HW) < 0 || check_like(&dout, &inp) < 0 ||
        (dinp.arr != NULL && check_like(&dinp, &inp) < 0) ||
        bn_vectors(vec, NARGS(vec), C) < 0 || bn_eps(op, eps) < 0 ||
        check_act(op, act, slope) < 0 || check_fused_out(op, &out, &inp, act) < 0 ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_batchnorm_act_backward_eval(F32(dinp), F32(dgamma), F32(dbeta), CF32(dout),
                                        CF32(out), CF32(inp), CF32(running_mean),
                                        CF32(running_var), CF32(gamma), N, C, HW, eps, act,
                                        slope);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(dinp.arr);
    Py_XDECREF(dgamma.arr);
    Py_XDECREF(dbeta.arr);
    Py_XDECREF(dout.arr);
    Py_XDECREF(inp.arr);
    Py_XDECREF(running_mean.arr);
    Py_XDECREF(running_var.arr);
    Py_XDECREF(gamma.arr);
    Py_XDECREF(out.arr);
    return ret;
}

/* ------------------------------------------------------------------------- */
/* Activations: elementwise over arrays of any shape (n may be 0)             */
/* ------------------------------------------------------------------------- */

typedef dg_status (*act_bwd_fn)(float *, const float *, const float *, size_t);
typedef dg_status (*leaky_bwd_fn)(float *, const float *, const float *, float, size_t);

/* out = f(inp) (leaky: with slope); out may BE inp. */
static dg_status
run_act(const dg_call *c)
{
    return c->u.act.leaky != NULL
               ? c->u.act.leaky(c->u.act.out, c->u.act.inp, c->u.act.slope, c->u.act.n)
               : c->u.act.fn(c->u.act.out, c->u.act.inp, c->u.act.n);
}

static PyObject *
act_forward_impl(const char *op, const char *fmt, char **kwlist, act_fwd_fn fn,
                 leaky_fwd_fn leaky, PyObject *args, PyObject *kwds, dg_prepared *keep)
{
    dg_arg out = ARG("out"), inp = ARG("inp");
    dg_arg *all[] = {&out, &inp};
    float slope = 0.0f;
    PyObject *ret = NULL;
    dg_call c = {run_act, {.act = {NULL}}};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, kwlist, conv_output, &out,
                                     conv_input, &inp, &slope)) {
        goto exit;
    }
    if (check_like(&out, &inp) < 0 || check_overlap(op, all, NARGS(all), 1) < 0) {
        goto exit;
    }
    c.u.act.fn = fn;
    c.u.act.leaky = leaky;
    c.u.act.out = F32(out);
    c.u.act.inp = CF32(inp);
    c.u.act.slope = slope;
    c.u.act.n = SIZE(inp);
    ret = run_or_keep(op, &c, all, NARGS(all), keep);
exit:
    Py_XDECREF(out.arr);
    Py_XDECREF(inp.arr);
    return ret;
}

/* dinp += dout * f'(cache); the cache is named by kwlist[2] ("inp" or "out"). */
static PyObject *
act_backward_impl(const char *op, const char *fmt, char **kwlist, act_bwd_fn fn,
                  leaky_bwd_fn leaky, PyObject *args, PyObject *kwds)
{
    dg_arg dinp = ARG("dinp"), dout = ARG("dout"), cache = ARG(kwlist[2]);
    dg_arg *all[] = {&dinp, &dout, &cache};
    float slope = 0.0f;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, kwlist, conv_output_opt, &dinp,
                                     conv_input, &dout, conv_input, &cache, &slope)) {
        goto exit;
    }
    if (check_like(&dout, &cache) < 0 || (dinp.arr != NULL && check_like(&dinp, &cache) < 0) ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = leaky != NULL ? leaky(F32(dinp), CF32(dout), CF32(cache), slope, SIZE(cache))
                       : fn(F32(dinp), CF32(dout), CF32(cache), SIZE(cache));
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(dinp.arr);
    Py_XDECREF(dout.arr);
    Py_XDECREF(cache.arr);
    return ret;
}

/* keyword lists must match the format strings entry for entry */
static char *act_fwd_kw[] = {"out", "inp", NULL};
static char *leaky_fwd_kw[] = {"out", "inp", "slope", NULL};
static char *act_bwd_inp_kw[] = {"dinp", "dout", "inp", NULL};
static char *leaky_bwd_kw[] = {"dinp", "dout", "inp", "slope", NULL};
static char *act_bwd_out_kw[] = {"dinp", "dout", "out", NULL};

PREPARABLE(_relu_forward, act_forward_impl("_relu_forward", "O&O&:_relu_forward", act_fwd_kw,
                                            dg_relu_forward, NULL, args, kwds, keep))

static PyObject *
py_relu_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return act_backward_impl("_relu_backward", "O&O&O&:_relu_backward", act_bwd_inp_kw,
                             dg_relu_backward, NULL, args, kwds);
}

PREPARABLE(_leaky_relu_forward,
           act_forward_impl("_leaky_relu_forward", "O&O&f:_leaky_relu_forward", leaky_fwd_kw,
                            NULL, dg_leaky_relu_forward, args, kwds, keep))

static PyObject *
py_leaky_relu_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return act_backward_impl("_leaky_relu_backward", "O&O&O&f:_leaky_relu_backward",
                             leaky_bwd_kw, NULL, dg_leaky_relu_backward, args, kwds);
}

PREPARABLE(_tanh_forward, act_forward_impl("_tanh_forward", "O&O&:_tanh_forward", act_fwd_kw,
                                            dg_tanh_forward, NULL, args, kwds, keep))

static PyObject *
py_tanh_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return act_backward_impl("_tanh_backward", "O&O&O&:_tanh_backward", act_bwd_out_kw,
                             dg_tanh_backward, NULL, args, kwds);
}

PREPARABLE(_sigmoid_forward,
           act_forward_impl("_sigmoid_forward", "O&O&:_sigmoid_forward", act_fwd_kw,
                            dg_sigmoid_forward, NULL, args, kwds, keep))

static PyObject *
py_sigmoid_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return act_backward_impl("_sigmoid_backward", "O&O&O&:_sigmoid_backward",
                             act_bwd_out_kw, dg_sigmoid_backward, NULL, args, kwds);
}

/* out[...] = 0 in place (any shape). */
static PyObject *
py_zero(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_zero";
    static char *kwlist[] = {"out", NULL};
    dg_arg out = ARG("out");
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&:_zero", kwlist, conv_output, &out)) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_zero(F32(out), SIZE(out));
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(out.arr);
    return ret;
}

/* ------------------------------------------------------------------------- */
/* Label embedding                                                            */
/* ------------------------------------------------------------------------- */

static PyObject *
py_embedding_forward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_embedding_forward";
    static char *kwlist[] = {"out", "labels", "table", NULL};
    dg_arg out = ARG("out"), labels = ARG("labels"), table = ARG("table");
    dg_arg *all[] = {&out, &labels, &table};
    npy_intp e_l[1] = {DG_ANY0}, e_t[2] = {DG_ANY, DG_ANY}, e_out[2];
    int N, K, D;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&:_embedding_forward", kwlist,
                                     conv_output, &out, conv_labels, &labels,
                                     conv_input, &table)) {
        goto exit;
    }
    if (check_shape(&labels, 1, e_l, "(N,)") < 0 || check_shape(&table, 2, e_t, "(K, D)") < 0) {
        goto exit;
    }
    N = (int)DIM(labels, 0);
    K = (int)DIM(table, 0);
    D = (int)DIM(table, 1);
    e_out[0] = N;
    e_out[1] = D;
    if (check_shape(&out, 2, e_out, "(N, D)") < 0 || check_labels(&labels, K) < 0 ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_embedding_forward(F32(out), I64(labels), CF32(table), N, K, D);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(out.arr);
    Py_XDECREF(labels.arr);
    Py_XDECREF(table.arr);
    return ret;
}

/* dtable is required here: it gives K, the range the labels are checked against. */
static PyObject *
py_embedding_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_embedding_backward";
    static char *kwlist[] = {"dtable", "dout", "labels", NULL};
    dg_arg dtable = ARG("dtable"), dout = ARG("dout"), labels = ARG("labels");
    dg_arg *all[] = {&dtable, &dout, &labels};
    npy_intp e_l[1] = {DG_ANY0}, e_t[2] = {DG_ANY, DG_ANY}, e_dout[2];
    int N, K, D;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&:_embedding_backward", kwlist,
                                     conv_output, &dtable, conv_input, &dout,
                                     conv_labels, &labels)) {
        goto exit;
    }
    if (check_shape(&labels, 1, e_l, "(N,)") < 0 || check_shape(&dtable, 2, e_t, "(K, D)") < 0) {
        goto exit;
    }
    N = (int)DIM(labels, 0);
    K = (int)DIM(dtable, 0);
    D = (int)DIM(dtable, 1);
    e_dout[0] = N;
    e_dout[1] = D;
    if (check_shape(&dout, 2, e_dout, "(N, D)") < 0 || check_labels(&labels, K) < 0 ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_embedding_backward(F32(dtable), CF32(dout), I64(labels), N, K, D);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(dtable.arr);
    Py_XDECREF(dout.arr);
    Py_XDECREF(labels.arr);
    return ret;
}

/* ------------------------------------------------------------------------- */
/* Losses. Forward returns the loss as a Python float; backward accumulates   */
/* dloss * d(loss)/d(x) into the gradient buffers (None: not needed). Inputs  */
/* of any shape, n may be 0 (the core defines that loss as 0).                */
/* ------------------------------------------------------------------------- */

/* Returns the loss, or NULL when st is not OK. */
static PyObject *
loss_result(const char *op, dg_status st, float loss)
{
    return check_status(op, st) < 0 ? NULL : PyFloat_FromDouble((double)loss);
}

static int
check_sign(const char *op, float sign)
{
    if (sign != 1.0f && sign != -1.0f) {
        return bad_scalar(op, "sign", "+1.0 or -1.0", sign);
    }
    return 0;
}

static int
check_temperature(const char *op, float T)
{
    if (!(T > 0.0f) || isinf(T)) {
        return bad_scalar(op, "T", "finite and > 0", T);
    }
    return 0;
}

typedef dg_status (*pair_fwd_fn)(float *, const float *, const float *, size_t);
typedef dg_status (*pair_bwd_fn)(float *, float *, const float *, const float *, float,
                                 size_t);

/* loss(x, y) for x, y of the same shape: bce_logits, l1, mse. */
static PyObject *
pair_forward_impl(const char *op, const char *fmt, pair_fwd_fn fn, PyObject *args,
                  PyObject *kwds)
{
    static char *kwlist[] = {"x", "y", NULL};
    dg_arg x = ARG("x"), y = ARG("y");
    float loss = 0.0f;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, kwlist, conv_input, &x, conv_input,
                                     &y)) {
        goto exit;
    }
    if (check_like(&y, &x) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = fn(&loss, CF32(x), CF32(y), SIZE(x));
    Py_END_ALLOW_THREADS
    ret = loss_result(op, st, loss);
exit:
    Py_XDECREF(x.arr);
    Py_XDECREF(y.arr);
    return ret;
}

/* dx (and dy) += dloss * d loss(x, y): l1, mse. */
static PyObject *
pair_backward_impl(const char *op, const char *fmt, pair_bwd_fn fn, PyObject *args,
                   PyObject *kwds)
{
    static char *kwlist[] = {"dx", "dy", "x", "y", "dloss", NULL};
    dg_arg dx = ARG("dx"), dy = ARG("dy"), x = ARG("x"), y = ARG("y");
    dg_arg *all[] = {&dx, &dy, &x, &y};
    float dloss;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, kwlist, conv_output_opt, &dx,
                                     conv_output_opt, &dy, conv_input, &x, conv_input, &y,
                                     &dloss)) {
        goto exit;
    }
    if (check_like(&y, &x) < 0 || (dx.arr != NULL && check_like(&dx, &x) < 0) ||
        (dy.arr != NULL && check_like(&dy, &x) < 0) ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = fn(F32(dx), F32(dy), CF32(x), CF32(y), dloss, SIZE(x));
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(dx.arr);
    Py_XDECREF(dy.arr);
    Py_XDECREF(x.arr);
    Py_XDECREF(y.arr);
    return ret;
}

static PyObject *
py_bce_logits_forward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return pair_forward_impl("_bce_logits_forward", "O&O&:_bce_logits_forward",
                             dg_bce_logits_forward, args, kwds);
}

static PyObject *
py_bce_logits_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_bce_logits_backward";
    static char *kwlist[] = {"dx", "x", "y", "dloss", NULL};
    dg_arg dx = ARG("dx"), x = ARG("x"), y = ARG("y");
    dg_arg *all[] = {&dx, &x, &y};
    float dloss;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&f:_bce_logits_backward", kwlist,
                                     conv_output_opt, &dx, conv_input, &x, conv_input, &y,
                                     &dloss)) {
        goto exit;
    }
    if (check_like(&y, &x) < 0 || (dx.arr != NULL && check_like(&dx, &x) < 0) ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_bce_logits_backward(F32(dx), CF32(x), CF32(y), dloss, SIZE(x));
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(dx.arr);
    Py_XDECREF(x.arr);
    Py_XDECREF(y.arr);
    return ret;
}

static PyObject *
py_hinge_forward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_hinge_forward";
    static char *kwlist[] = {"x", "sign", NULL};
    dg_arg x = ARG("x");
    float sign, loss = 0.0f;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&f:_hinge_forward", kwlist, conv_input,
                                     &x, &sign)) {
        goto exit;
    }
    if (check_sign(op, sign) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_hinge_forward(&loss, CF32(x), sign, SIZE(x));
    Py_END_ALLOW_THREADS
    ret = loss_result(op, st, loss);
exit:
    Py_XDECREF(x.arr);
    return ret;
}

static PyObject *
py_hinge_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_hinge_backward";
    static char *kwlist[] = {"dx", "x", "sign", "dloss", NULL};
    dg_arg dx = ARG("dx"), x = ARG("x");
    dg_arg *all[] = {&dx, &x};
    float sign, dloss;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&ff:_hinge_backward", kwlist,
                                     conv_output_opt, &dx, conv_input, &x, &sign, &dloss)) {
        goto exit;
    }
    if ((dx.arr != NULL && check_like(&dx, &x) < 0) || check_sign(op, sign) < 0 ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_hinge_backward(F32(dx), CF32(x), sign, dloss, SIZE(x));
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(dx.arr);
    Py_XDECREF(x.arr);
    return ret;
}

static PyObject *
py_hinge_gen_forward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_hinge_gen_forward";
    static char *kwlist[] = {"x", NULL};
    dg_arg x = ARG("x");
    float loss = 0.0f;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&:_hinge_gen_forward", kwlist,
                                     conv_input, &x)) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_hinge_gen_forward(&loss, CF32(x), SIZE(x));
    Py_END_ALLOW_THREADS
    ret = loss_result(op, st, loss);
exit:
    Py_XDECREF(x.arr);
    return ret;
}

/* The gradient does not depend on x: dx (required) gives n. */
static PyObject *
py_hinge_gen_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_hinge_gen_backward";
    static char *kwlist[] = {"dx", "dloss", NULL};
    dg_arg dx = ARG("dx");
    float dloss;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&f:_hinge_gen_backward", kwlist,
                                     conv_output, &dx, &dloss)) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_hinge_gen_backward(F32(dx), dloss, SIZE(dx));
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(dx.arr);
    return ret;
}

static PyObject *
py_least_squares_forward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_least_squares_forward";
    static char *kwlist[] = {"x", "target", NULL};
    dg_arg x = ARG("x");
    float target, loss = 0.0f;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&f:_least_squares_forward", kwlist,
                                     conv_input, &x, &target)) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_least_squares_forward(&loss, CF32(x), target, SIZE(x));
    Py_END_ALLOW_THREADS
    ret = loss_result(op, st, loss);
exit:
    Py_XDECREF(x.arr);
    return ret;
}

static PyObject *
py_least_squares_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_least_squares_backward";
    static char *kwlist[] = {"dx", "x", "target", "dloss", NULL};
    dg_arg dx = ARG("dx"), x = ARG("x");
    dg_arg *all[] = {&dx, &x};
    float target, dloss;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&ff:_least_squares_backward", kwlist,
                                     conv_output_opt, &dx, conv_input, &x, &target,
                                     &dloss)) {
        goto exit;
    }
    if ((dx.arr != NULL && check_like(&dx, &x) < 0) ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_least_squares_backward(F32(dx), CF32(x), target, dloss, SIZE(x));
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(dx.arr);
    Py_XDECREF(x.arr);
    return ret;
}

static PyObject *
py_l1_forward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return pair_forward_impl("_l1_forward", "O&O&:_l1_forward", dg_l1_forward, args, kwds);
}

static PyObject *
py_l1_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return pair_backward_impl("_l1_backward", "O&O&O&O&f:_l1_backward", dg_l1_backward,
                              args, kwds);
}

static PyObject *
py_mse_forward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return pair_forward_impl("_mse_forward", "O&O&:_mse_forward", dg_mse_forward, args,
                             kwds);
}

static PyObject *
py_mse_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    return pair_backward_impl("_mse_backward", "O&O&O&O&f:_mse_backward", dg_mse_backward,
                              args, kwds);
}

/* x is (N, K) (N may be 0), labels (N,) in [0, K). */
static int
ce_shapes(const dg_arg *x, const dg_arg *labels, int *N, int *K)
{
    npy_intp e_x[2] = {DG_ANY0, DG_ANY}, e_l[1];
    if (check_shape(x, 2, e_x, "(N, K)") < 0) {
        return -1;
    }
    *N = (int)PyArray_DIM(x->arr, 0);
    *K = (int)PyArray_DIM(x->arr, 1);
    e_l[0] = *N;
    if (check_shape(labels, 1, e_l, "(N,)") < 0) {
        return -1;
    }
    return check_labels(labels, *K);
}

static PyObject *
py_cross_entropy_forward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_cross_entropy_forward";
    static char *kwlist[] = {"x", "labels", NULL};
    dg_arg x = ARG("x"), labels = ARG("labels");
    float loss = 0.0f;
    int N, K;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&:_cross_entropy_forward", kwlist,
                                     conv_input, &x, conv_labels, &labels)) {
        goto exit;
    }
    if (ce_shapes(&x, &labels, &N, &K) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_cross_entropy_forward(&loss, CF32(x), I64(labels), N, K);
    Py_END_ALLOW_THREADS
    ret = loss_result(op, st, loss);
exit:
    Py_XDECREF(x.arr);
    Py_XDECREF(labels.arr);
    return ret;
}

static PyObject *
py_cross_entropy_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_cross_entropy_backward";
    static char *kwlist[] = {"dx", "x", "labels", "dloss", NULL};
    dg_arg dx = ARG("dx"), x = ARG("x"), labels = ARG("labels");
    dg_arg *all[] = {&dx, &x, &labels};
    float dloss;
    int N, K;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&f:_cross_entropy_backward", kwlist,
                                     conv_output_opt, &dx, conv_input, &x, conv_labels,
                                     &labels, &dloss)) {
        goto exit;
    }
    if (ce_shapes(&x, &labels, &N, &K) < 0 || (dx.arr != NULL && check_like(&dx, &x) < 0) ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_cross_entropy_backward(F32(dx), CF32(x), I64(labels), dloss, N, K);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(dx.arr);
    Py_XDECREF(x.arr);
    Py_XDECREF(labels.arr);
    return ret;
}

/* binary: s and t of any equal shape, N = their size, K = 1;
 * categorical: s is (N, K) (N may be 0), t the same. */
static int
kl_shapes(const char *op, const dg_arg *s, const dg_arg *t, int binary, int *N, int *K)
{
    if (binary) {
        long long f[1];
        if (check_like(t, s) < 0) {
            return -1;
        }
        f[0] = (long long)PyArray_SIZE(s->arr);
        *K = 1;
        return int_product(op, "N (the number of logits)", 1, f, N);
    }
    else {
        npy_intp e_s[2] = {DG_ANY0, DG_ANY};
        if (check_shape(s, 2, e_s, "(N, K)") < 0 || check_like(t, s) < 0) {
            return -1;
        }
        *N = (int)PyArray_DIM(s->arr, 0);
        *K = (int)PyArray_DIM(s->arr, 1);
        return 0;
    }
}

static PyObject *
py_distill_kl_forward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_distill_kl_forward";
    static char *kwlist[] = {"s", "t", "T", "binary", NULL};
    dg_arg s = ARG("s"), t = ARG("t");
    float T, loss = 0.0f;
    int binary, N, K;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&fp:_distill_kl_forward", kwlist,
                                     conv_input, &s, conv_input, &t, &T, &binary)) {
        goto exit;
    }
    if (kl_shapes(op, &s, &t, binary, &N, &K) < 0 || check_temperature(op, T) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_distill_kl_forward(&loss, CF32(s), CF32(t), T, binary, N, K);
    Py_END_ALLOW_THREADS
    ret = loss_result(op, st, loss);
exit:
    Py_XDECREF(s.arr);
    Py_XDECREF(t.arr);
    return ret;
}

static PyObject *
py_distill_kl_backward(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_distill_kl_backward";
    static char *kwlist[] = {"ds", "s", "t", "T", "binary", "dloss", NULL};
    dg_arg ds = ARG("ds"), s = ARG("s"), t = ARG("t");
    dg_arg *all[] = {&ds, &s, &t};
    float T, dloss;
    int binary, N, K;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&fpf:_distill_kl_backward", kwlist,
                                     conv_output_opt, &ds, conv_input, &s, conv_input, &t,
                                     &T, &binary, &dloss)) {
        goto exit;
    }
    if (kl_shapes(op, &s, &t, binary, &N, &K) < 0 ||
        (ds.arr != NULL && check_like(&ds, &s) < 0) || check_temperature(op, T) < 0 ||
        check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_distill_kl_backward(F32(ds), CF32(s), CF32(t), T, binary, dloss, N, K);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(ds.arr);
    Py_XDECREF(s.arr);
    Py_XDECREF(t.arr);
    return ret;
}

/* ------------------------------------------------------------------------- */
/* Adam and EMA, in place over arrays of any (equal) shape                    */
/* ------------------------------------------------------------------------- */

static PyObject *
py_adam_step(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_adam_step";
    static char *kwlist[] = {"param", "m", "v", "grad", "step", "lr", "beta1", "beta2",
                             "eps", "weight_decay", NULL};
    dg_arg param = ARG("param"), m = ARG("m"), v = ARG("v"), grad = ARG("grad");
    dg_arg *all[] = {&param, &m, &v, &grad};
    long step;
    double lr, beta1, beta2, eps, weight_decay;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&O&lddddd:_adam_step", kwlist,
                                     conv_output, &param, conv_output, &m, conv_output, &v,
                                     conv_input, &grad, &step, &lr, &beta1, &beta2, &eps,
                                     &weight_decay)) {
        goto exit;
    }
    if (check_like(&m, &param) < 0 || check_like(&v, &param) < 0 ||
        check_like(&grad, &param) < 0) {
        goto exit;
    }
    if (step < 1) {
        PyErr_Format(PyExc_ValueError, "%s: step must be >= 1 (1-based), got %ld", op, step);
        goto exit;
    }
    if ((!(lr >= 0.0) || isinf(lr)) && bad_scalar(op, "lr", "finite and >= 0", lr) < 0) {
        goto exit;
    }
    if (!(beta1 >= 0.0 && beta1 < 1.0) && bad_scalar(op, "beta1", "in [0, 1)", beta1) < 0) {
        goto exit;
    }
    if (!(beta2 >= 0.0 && beta2 < 1.0) && bad_scalar(op, "beta2", "in [0, 1)", beta2) < 0) {
        goto exit;
    }
    if ((!(eps >= 0.0) || isinf(eps)) && bad_scalar(op, "eps", "finite and >= 0", eps) < 0) {
        goto exit;
    }
    if ((!(weight_decay >= 0.0) || isinf(weight_decay)) &&
        bad_scalar(op, "weight_decay", "finite and >= 0", weight_decay) < 0) {
        goto exit;
    }
    if (check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_adam_step(F32(param), F32(m), F32(v), CF32(grad), SIZE(param), step, lr, beta1,
                      beta2, eps, weight_decay);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(param.arr);
    Py_XDECREF(m.arr);
    Py_XDECREF(v.arr);
    Py_XDECREF(grad.arr);
    return ret;
}

static PyObject *
py_ema_update(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_ema_update";
    static char *kwlist[] = {"ema", "param", "decay", NULL};
    dg_arg ema = ARG("ema"), param = ARG("param");
    dg_arg *all[] = {&ema, &param};
    float decay;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&f:_ema_update", kwlist, conv_output,
                                     &ema, conv_input, &param, &decay)) {
        goto exit;
    }
    if (check_like(&param, &ema) < 0 || check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    if (!(decay >= 0.0f && decay <= 1.0f)) {
        bad_scalar(op, "decay", "in [0, 1]", decay);
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_ema_update(F32(ema), CF32(param), SIZE(ema), decay);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(ema.arr);
    Py_XDECREF(param.arr);
    return ret;
}

/* ------------------------------------------------------------------------- */
/* RNG: fills out (any shape) in place; element i uses counter offset + i     */
/* (mod 2**64).                                                               */
/* ------------------------------------------------------------------------- */

static PyObject *
py_rng_normal(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_rng_normal";
    static char *kwlist[] = {"out", "seed", "offset", NULL};
    dg_arg out = ARG("out");
    dg_u64 seed = {op, "seed", 0}, offset = {op, "offset", 0};
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&:_rng_normal", kwlist, conv_output,
                                     &out, conv_u64, &seed, conv_u64, &offset)) {
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_rng_normal(F32(out), SIZE(out), seed.value, offset.value);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(out.arr);
    return ret;
}

static PyObject *
py_rng_uniform(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_rng_uniform";
    static char *kwlist[] = {"out", "seed", "offset", "lo", "hi", NULL};
    dg_arg out = ARG("out");
    dg_u64 seed = {op, "seed", 0}, offset = {op, "offset", 0};
    float lo, hi;
    PyObject *ret = NULL;
    dg_status st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O&O&ff:_rng_uniform", kwlist,
                                     conv_output, &out, conv_u64, &seed, conv_u64, &offset,
                                     &lo, &hi)) {
        goto exit;
    }
    if (!isfinite(lo) || !isfinite(hi) || !(lo < hi)) {
        PyObject *l = PyFloat_FromDouble(lo), *h = PyFloat_FromDouble(hi);
        if (l != NULL && h != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "%s: lo and hi must be finite float32 values with lo < hi, "
                         "got %R and %R", op, l, h);
        }
        Py_XDECREF(l);
        Py_XDECREF(h);
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    st = dg_rng_uniform(F32(out), SIZE(out), seed.value, offset.value, lo, hi);
    Py_END_ALLOW_THREADS
    if (check_status(op, st) < 0) {
        goto exit;
    }
    ret = Py_None;
    Py_INCREF(ret);
exit:
    Py_XDECREF(out.arr);
    return ret;
}

/* ------------------------------------------------------------------------- */
/* Module                                                                     */
/* ------------------------------------------------------------------------- */

/* A new C-ordered copy of a: for a C-contiguous float32 a, a new array and one
 * memcpy, not NumPy's copy with its dtype-transfer machinery, whose code runs
 * cold after a one-image sample's kernels (~1.3 % of a teacher's sample,
 * PERFORMANCE.md log 130). */
static PyObject *
copy_array(PyArrayObject *a)
{
    PyObject *c;

    if (PyArray_TYPE(a) != NPY_FLOAT || !PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISNOTSWAPPED(a)) {
        return PyArray_NewCopy(a, NPY_CORDER);
    }
    c = PyArray_SimpleNew(PyArray_NDIM(a), PyArray_DIMS(a), NPY_FLOAT);
    if (c != NULL) {
        memcpy(PyArray_DATA((PyArrayObject *)c), PyArray_DATA(a), (size_t)PyArray_NBYTES(a));
    }
    return c;
}

/* _run_plan(calls, inp, src, at, out): a plan's sample in one call. inp filled
 * from src[at:] (its input: the noise, drawn ahead), then each of the tuple calls
 * run in turn (a prepared call's op directly, anything else called with no
 * arguments); returns a new C-ordered copy of the array out once they have run.
 * One call instead of five for a one-image sample (GAN.sample; PERFORMANCE.md
 * log 130). */
static PyObject *
py_run_plan(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    static const char op[] = "_run_plan";
    static char *kwlist[] = {"calls", "inp", "src", "at", "out", NULL};
    dg_arg inp = ARG("inp"), src = ARG("src");
    dg_arg *all[] = {&inp, &src};
    Py_ssize_t at;
    PyObject *calls, *out, *ret = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O&O&nO!:_run_plan", kwlist, &PyTuple_Type,
                                     &calls, conv_output, &inp, conv_input, &src, &at,
                                     &PyArray_Type, &out)) {
        goto exit;
    }
    if (at < 0 || (size_t)at > SIZE(src) || SIZE(src) - (size_t)at < SIZE(inp)) {
        PyErr_Format(PyExc_ValueError,
                     "%s: src[at:] must hold inp's %zu values, got at = %zd of %zu", op,
                     SIZE(inp), at, SIZE(src));
        goto exit;
    }
    if (check_overlap(op, all, NARGS(all), 0) < 0) {
        goto exit;
    }
    memcpy(PyArray_DATA(inp.arr), (const float *)PyArray_DATA(src.arr) + at,
           SIZE(inp) * sizeof(float));
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(calls); i++) {
        PyObject *c = PyTuple_GET_ITEM(calls, i);
        PyObject *r = Py_IS_TYPE(c, &dg_prepared_type)
                          ? run_call(((dg_prepared *)c)->op, &((dg_prepared *)c)->call)
                          : PyObject_CallNoArgs(c);
        if (r == NULL) {
            goto exit;
        }
        Py_DECREF(r);
    }
    ret = copy_array((PyArrayObject *)out);
exit:
    Py_XDECREF(inp.arr);
    Py_XDECREF(src.arr);
    return ret;
}

/* _prepare(fn, *args, **kwargs): fn's call on these arguments as a prepared
 * call (dg_prepared), checked now as fn checks them (the same exceptions); None
 * when fn is not a binding that can be prepared, or an input would be copied. */
static PyObject *
py_prepare(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    typedef PyObject *(*prep_fn)(PyObject *, PyObject *, dg_prepared *);
    static const struct {
        PyCFunctionWithKeywords binding;
        prep_fn prep;
    } table[] = {
        {py_linear_bn_convt_forward, prep_linear_bn_convt_forward},
        {py_conv2d_forward, prep_conv2d_forward},
        {py_conv_transpose2d_forward, prep_conv_transpose2d_forward},
        {py_relu_forward, prep_relu_forward},
        {py_leaky_relu_forward, prep_leaky_relu_forward},
        {py_tanh_forward, prep_tanh_forward},
        {py_sigmoid_forward, prep_sigmoid_forward},
    };
    prep_fn prep = NULL;
    PyObject *fn, *rest, *r;
    dg_prepared *keep;

    if (PyTuple_GET_SIZE(args) < 1) {
        PyErr_SetString(PyExc_TypeError, "_prepare: needs the binding to prepare a call of");
        return NULL;
    }
    fn = PyTuple_GET_ITEM(args, 0);
    if (PyCFunction_Check(fn) && (PyCFunction_GET_FLAGS(fn) & METH_KEYWORDS)) {
        for (int i = 0; i < NARGS(table); i++) {
            if ((PyCFunction)(void (*)(void))table[i].binding == PyCFunction_GET_FUNCTION(fn)) {
                prep = table[i].prep;
            }
        }
    }
    if (prep == NULL) {
        Py_RETURN_NONE;
    }
    keep = PyObject_New(dg_prepared, &dg_prepared_type);
    if (keep == NULL) {
        return NULL;
    }
    keep->op = NULL;
    keep->narrs = 0;
    rest = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));
    r = rest != NULL ? prep(rest, kwds, keep) : NULL;
    Py_XDECREF(rest);
    if (r == NULL || keep->op == NULL) {
        Py_DECREF(keep);
        return r;   /* NULL: the error; None: nothing kept */
    }
    Py_DECREF(r);
    return (PyObject *)keep;
}

#define KW_METHOD(name, sig, doc)                                                  \
    {#name, (PyCFunction)(void (*)(void))py##name, METH_VARARGS | METH_KEYWORDS,   \
     #name sig "\n--\n\n" doc}
#define NOARGS_METHOD(name, doc)                                                   \
    {#name, (PyCFunction)(void (*)(void))py##name, METH_NOARGS,                    \
     #name "($module, /)\n--\n\n" doc}

static PyMethodDef dg_methods[] = {
    KW_METHOD(_run_plan, "($module, /, calls, inp, src, at, out)",
              "inp filled from src[at:], each of the calls run, then a new copy of out "
              "returned: a plan's sample in one call."),
    KW_METHOD(_prepare, "($module, fn, /, *args, **kwargs)",
              "fn(*args, **kwargs) as a prepared call, its arguments checked now: calling "
              "it with no arguments runs it again on the same arrays. None when fn (a "
              "forward binding) cannot be prepared, or an input would be copied."),
    KW_METHOD(_status_str, "($module, /, status)", "dg_status_str: the name of a status."),
    NOARGS_METHOD(_blas_name, "Name of the BLAS in use (dg_blas_name)."),
    KW_METHOD(_set_num_threads, "($module, /, n)",
              "Threads of the core's pool, n >= 1 (the BLAS stays at one thread)."),
    NOARGS_METHOD(_get_num_threads, "Threads of the core's pool."),
    KW_METHOD(_few_sparse_share, "($module, /, share=None)",
              "The share of nonzero inputs up to which the few-image transposed kernel "
              "sums only the nonzero ones (dg_few_sparse_share): set when 0 <= share <= "
              "1, the CPU's when share < 0, asked when None; returns the one before."),
    KW_METHOD(_few_sparse_values, "($module, /, reg)",
              "How the few-image kernel's sparse rows broadcast their inputs "
              "(dg_few_sparse_values): 0 a load each, 1 from registers, -1 the CPU's; "
              "returns the one before."),
    KW_METHOD(_sgemm, "($module, /, transA, transB, alpha, A, B, beta, C)",
              "C = alpha * op(A) @ op(B) + beta * C in place on 2-D arrays (dg_sgemm)."),
    KW_METHOD(_sgemm_ref, "($module, /, transA, transB, alpha, A, B, beta, C)",
              "The plain-loop reference GEMM, same contract (dg_sgemm_ref)."),
    KW_METHOD(_cblas_sgemm, "($module, /, transA, transB, alpha, A, B, beta, C, threads)",
              "cblas_sgemm with the BLAS's own pool at `threads` threads, for benchmarks "
              "(dg_cblas_sgemm_threads)."),
    KW_METHOD(_linear_forward, "($module, /, out, inp, weight, bias)",
              "out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias (OC,) or None."),
    KW_METHOD(_linear_backward, "($module, /, dinp, dweight, dbias, dout, inp, weight)",
              "Accumulates dinp, dweight, dbias (each may be None)."),
    KW_METHOD(_conv2d_workspace_size,
              "($module, /, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW)",
              "Floats of workspace _conv2d_forward/_backward need."),
    KW_METHOD(_conv2d_direct,
              "($module, /, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW)",
              "True when the forward and the weight gradient of this conv2d run a direct "
              "kernel on this CPU (dg_conv2d_direct): no im2col matrix to keep."),
    KW_METHOD(_conv2d_act_fits,
              "($module, /, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW)",
              "True when _conv2d_forward / _conv2d_backward fuse an activation (act) "
              "for this geometry on this CPU (dg_conv2d_act_fits)."),
    KW_METHOD(_conv2d_forward,
              "($module, /, out, workspace, inp, weight, bias, SH, SW, PH, PW, col=None, *, "
              "act=0, slope=0.0)",
              "out (N, OC, OH, OW) = conv2d(inp (N, C, H, W), weight (OC, C, KH, KW)) + bias; "
              "col, when given, (C*KH*KW, N*OH*OW), receives the im2col matrix of inp. "
              "act (ACT_RELU, ACT_LEAKY_RELU with slope >= 0) applies that activation to "
              "out in the same pass, where _conv2d_act_fits."),
    KW_METHOD(_conv2d_backward,
              "($module, /, dinp, dweight, dbias, workspace, dout, inp, weight, SH, SW, PH, PW, "
              "col=None, *, out=None, act=0, slope=0.0)",
              "Accumulates dinp, dweight, dbias (each may be None); col: the matrix "
              "_conv2d_forward kept for this inp, which the weight gradient then reuses. "
              "With act (as the fused forward's), dout is the gradient of the activation's "
              "output out, the fused forward's."),
    KW_METHOD(_conv_transpose2d_workspace_size,
              "($module, /, N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW)",
              "Floats of workspace _conv_transpose2d_forward/_backward need."),
    KW_METHOD(_conv_transpose2d_forward,
              "($module, /, out, workspace, inp, weight, bias, SH, SW, PH, PW)",
              "out (N, OC, OH, OW) = conv_transpose2d(inp (N, C, H, W), weight (C, OC, KH, KW))"
              " + bias; OH - (H-1)*SH + 2*PH - KH is the output padding."),
    KW_METHOD(_conv_transpose2d_backward,
              "($module, /, dinp, dweight, dbias, workspace, dout, inp, weight, SH, SW, PH, PW)",
              "Accumulates dinp, dweight, dbias (each may be None)."),
    KW_METHOD(_batchnorm_forward,
              "($module, /, out, mean, rstd, running_mean, running_var, inp, gamma, beta, eps,"
              " momentum, *, act=0, slope=0.0)",
              "Training-mode batch norm of inp (N, C, *); updates running stats if not None."
              " act 1 (relu) or 2 (leaky_relu, slope >= 0) fuses that activation after it."),
    KW_METHOD(_batchnorm_forward_eval,
              "($module, /, out, inp, running_mean, running_var, gamma, beta, eps, *, act=0,"
              " slope=0.0)",
              "Eval-mode batch norm with the running statistics; act as in _batchnorm_forward."),
    KW_METHOD(_linear_bn_convt_forward,
              "($module, /, out, lin, hid, workspace, z, lweight, lbias, running_mean, "
              "running_var, gamma, beta, eps, weight, bias, SH, SW, PH, PW, *, act=0, "
              "slope=0.0, running_mean2=None, running_var2=None, gamma2=None, beta2=None, "
              "eps2=1e-5, act2=0, slope2=0.0, packed=None, scale=None)",
              "A generator's head in eval mode, in one call: lin (N, C*H*W) = z (N, K) @ "
              "lweight^T + lbias, hid (N, C, H, W) = _batchnorm_forward_eval(lin) with act, "
              "out = _conv_transpose2d_forward(hid) + bias; the same three results. With "
              "running_mean2 and running_var2 (OC,), out is instead "
              "_batchnorm_forward_eval of that output with them, gamma2, beta2, eps2 and "
              "act2, slope2: the batch norm that follows, the same bits. On one thread at "
              "batch 1 the three go chunk of channels by chunk, the linear layer's weights "
              "streaming while the transposed layer sums, the second batch norm applied as "
              "the sums are stored (dg_linear_bn_convt_forward); there it reads packed, "
              "weight as _convt_few_pack laid it out, if given, instead of copying each "
              "block's weights per call, and scale (C*H*W,), _bn_eval_scale of running_var, "
              "gamma and eps, if given, instead of computing the first batch norm's scales: "
              "the caller keeps both current."),
    KW_METHOD(_bn_eval_scale,
              "($module, /, scale, running_var, gamma, eps)",
              "scale (C,) = 1 / sqrt(running_var + eps) * gamma (gamma None: 1), the factor "
              "_batchnorm_forward_eval multiplies each channel's centred input by, to the bit "
              "(dg_batchnorm_eval_scale)."),
    KW_METHOD(_convt_few_pack,
              "($module, /, packed, weight)",
              "packed (C*OC*16 + 16,) = weight (C, OC, 4, 4) as the one-image transposed "
              "kernel of _linear_bn_convt_forward reads it, then a flag (dg_convt_few_pack). "
              "Returns whether every weight is finite (the kernel uses packed only then)."),
    KW_METHOD(_batchnorm_backward,
              "($module, /, dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma, *, out=None,"
              " act=0, slope=0.0)",
              "Backward of the training-mode forward; accumulates. With act, out is the fused"
              " forward's output."),
    KW_METHOD(_batchnorm_backward_eval,
              "($module, /, dinp, dgamma, dbeta, dout, inp, running_mean, running_var, gamma,"
              " eps, *, out=None, act=0, slope=0.0)",
              "Backward of the eval-mode forward; accumulates. act and out as in"
              " _batchnorm_backward."),
    KW_METHOD(_relu_forward, "($module, /, out, inp)", "out = relu(inp); out may be inp."),
    KW_METHOD(_relu_backward, "($module, /, dinp, dout, inp)", "dinp += dout * relu'(inp)."),
    KW_METHOD(_leaky_relu_forward, "($module, /, out, inp, slope)",
              "out = leaky_relu(inp, slope); out may be inp."),
    KW_METHOD(_leaky_relu_backward, "($module, /, dinp, dout, inp, slope)",
              "dinp += dout * leaky_relu'(inp)."),
    KW_METHOD(_tanh_forward, "($module, /, out, inp)", "out = tanh(inp); out may be inp."),
    KW_METHOD(_tanh_backward, "($module, /, dinp, dout, out)",
              "dinp += dout * (1 - out^2), out the forward's OUTPUT."),
    KW_METHOD(_sigmoid_forward, "($module, /, out, inp)", "out = sigmoid(inp); out may be inp."),
    KW_METHOD(_sigmoid_backward, "($module, /, dinp, dout, out)",
              "dinp += dout * out * (1 - out), out the forward's OUTPUT."),
    KW_METHOD(_zero, "($module, /, out)", "out[...] = 0 in place, on the core's thread pool."),
    KW_METHOD(_embedding_forward, "($module, /, out, labels, table)",
              "out (N, D) = table (K, D)[labels (N,)]."),
    KW_METHOD(_embedding_backward, "($module, /, dtable, dout, labels)",
              "dtable[labels[n]] += dout[n]."),
    KW_METHOD(_bce_logits_forward, "($module, /, x, y)", "mean BCE with logits; a float."),
    KW_METHOD(_bce_logits_backward, "($module, /, dx, x, y, dloss)", "Accumulates dx."),
    KW_METHOD(_hinge_forward, "($module, /, x, sign)", "mean relu(1 - sign * x); a float."),
    KW_METHOD(_hinge_backward, "($module, /, dx, x, sign, dloss)", "Accumulates dx."),
    KW_METHOD(_hinge_gen_forward, "($module, /, x)", "-mean x; a float."),
    KW_METHOD(_hinge_gen_backward, "($module, /, dx, dloss)", "dx += -dloss / dx.size."),
    KW_METHOD(_least_squares_forward, "($module, /, x, target)",
              "0.5 * mean (x - target)^2; a float."),
    KW_METHOD(_least_squares_backward, "($module, /, dx, x, target, dloss)", "Accumulates dx."),
    KW_METHOD(_l1_forward, "($module, /, x, y)", "mean |x - y|; a float."),
    KW_METHOD(_l1_backward, "($module, /, dx, dy, x, y, dloss)",
              "Accumulates dx and dy (each may be None)."),
    KW_METHOD(_mse_forward, "($module, /, x, y)", "mean (x - y)^2; a float."),
    KW_METHOD(_mse_backward, "($module, /, dx, dy, x, y, dloss)",
              "Accumulates dx and dy (each may be None)."),
    KW_METHOD(_cross_entropy_forward, "($module, /, x, labels)",
              "Softmax cross-entropy of x (N, K), mean over N; a float."),
    KW_METHOD(_cross_entropy_backward, "($module, /, dx, x, labels, dloss)", "Accumulates dx."),
    KW_METHOD(_distill_kl_forward, "($module, /, s, t, T, binary)",
              "Tempered KL(teacher || student) with T^2 applied; a float."),
    KW_METHOD(_distill_kl_backward, "($module, /, ds, s, t, T, binary, dloss)",
              "ds += dloss * T * (q - p) / N (binary) or T * (Q - P) / N."),
    KW_METHOD(_adam_step,
              "($module, /, param, m, v, grad, step, lr, beta1, beta2, eps, weight_decay)",
              "One AdamW step in place on param, m, v."),
    KW_METHOD(_ema_update, "($module, /, ema, param, decay)",
              "ema = decay * ema + (1 - decay) * param, in place."),
    KW_METHOD(_rng_normal, "($module, /, out, seed, offset)",
              "Fills out with N(0, 1) draws (Philox4x32-10)."),
    KW_METHOD(_rng_uniform, "($module, /, out, seed, offset, lo, hi)",
              "Fills out with U[lo, hi) draws (Philox4x32-10)."),
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef dg_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "distgan._core",
    .m_doc = "The C core of distgan (private; the public API is distgan.ops).",
    .m_size = -1,
    .m_methods = dg_methods,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    import_array();
    if (PyType_Ready(&dg_prepared_type) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&dg_module);
    if (m == NULL) {
        return NULL;
    }
    /* the act= codes of the batch-norm ops (distgan.h) */
    if (PyModule_AddIntConstant(m, "ACT_RELU", DG_ACT_RELU) < 0 ||
        PyModule_AddIntConstant(m, "ACT_LEAKY_RELU", DG_ACT_LEAKY_RELU) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
