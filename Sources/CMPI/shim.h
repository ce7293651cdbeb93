/* shim.h: Open MPI for Swift. MPI_COMM_WORLD, MPI_FLOAT, ... are macros casting the addresses of
 * globals, which Swift cannot import; these inline functions return them. */
#pragma once
#include <mpi.h>
static inline MPI_Comm swmpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm swmpi_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Datatype swmpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype swmpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype swmpi_int(void) { return MPI_INT; }
static inline MPI_Datatype swmpi_byte(void) { return MPI_BYTE; }
static inline MPI_Op swmpi_sum(void) { return MPI_SUM; }
static inline MPI_Op swmpi_max(void) { return MPI_MAX; }
static inline void *swmpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Request swmpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *swmpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Status *swmpi_statuses_ignore(void) { return MPI_STATUSES_IGNORE; }
static inline MPI_Errhandler swmpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline MPI_Group swmpi_group_null(void) { return MPI_GROUP_NULL; }
static inline int swmpi_any_source(void) { return MPI_ANY_SOURCE; }
static inline int swmpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int swmpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline int swmpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
