# moto's DynamoDB server for local runs and tests: one request at a time,
# transactions backing up only the items they touch. Started by
# `DynamoEndpoint::start_moto` (local/src/lambda_local.rs) as `python3 -c`
# with the port as the first argument; see that function for why.
import copy, logging, sys, threading
from werkzeug.serving import run_simple
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request; errors still show
from moto.server import DomainDispatcherApplication, create_backend_app
import moto.dynamodb.models as models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

# TransactWriteItems backs up every table it touches (a deep copy, so its
# cost grows with the table) to restore it if the transaction fails.
# Requests run one at a time here, so backing up only the items it
# touches, and putting them back on failure, restores the same state.
class _TablesAreNotCopied:
    def __getattr__(self, name):
        return getattr(copy, name)
    @staticmethod
    def deepcopy(value, *args, **kwargs):
        return value if isinstance(value, Table) else copy.deepcopy(value, *args, **kwargs)
models.copy = _TablesAreNotCopied()
_transact = models.DynamoDBBackend.transact_write_items
def _key(table, attrs):
    hash_value = DynamoType(attrs[table.hash_key_attr])
    range_value = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
    return hash_value, range_value
def transact_write_items(self, transact_items):
    saved = []
    for entry in transact_items:
        for op in entry.values():
            table = self.tables.get(op.get("TableName")) if isinstance(op, dict) else None
            try:
                hash_value, range_value = _key(table, op.get("Item") or op.get("Key"))
                current = table.get_item(hash_value, range_value)
            except Exception:
                continue  # malformed: moto refuses it before writing anything
            saved.append((table, hash_value, range_value, copy.deepcopy(current)))
    try:
        return _transact(self, transact_items)
    except Exception:
        for table, hash_value, range_value, item in reversed(saved):
            if range_value is None:
                table.items.pop(hash_value, None)
                if item is not None:
                    table.items[hash_value] = item
            else:
                ranges = table.items[hash_value]
                ranges.pop(range_value, None)
                if item is not None:
                    ranges[range_value] = item
                elif not ranges:
                    del table.items[hash_value]
        raise
models.DynamoDBBackend.transact_write_items = transact_write_items

app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
def serial(environ, start_response):
    with lock:
        return list(app(environ, start_response))
run_simple("127.0.0.1", int(sys.argv[1]), serial, threaded=True)
