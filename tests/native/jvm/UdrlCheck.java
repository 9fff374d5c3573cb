import dev.udrl.Udrl;
import dev.udrl.UdrlException;

/**
 * The JVM binding as an app uses it: args are the model path, then query and length; prints, one
 * line per task, "task<TAB>text" (generate) and "stream:task<TAB>pieces joined" (stream), then the
 * code and message an unknown task gives, and whether a closed model refuses further calls.
 */
public final class UdrlCheck {
    public static void main(String[] args) {
        String query = args[1];
        int length = Integer.parseInt(args[2]);
        try (Udrl model = Udrl.load(args[0], 1)) {
            for (String task : model.tasks()) {
                System.out.println(task + "\t" + model.generate(query, task, length, -1));
                StringBuilder pieces = new StringBuilder();
                String whole = model.stream(query, task, length, -1, piece -> {
                    pieces.append(piece);
                    return true;
                });
                System.out.println("stream:" + task + "\t" + pieces + "\t" + whole);
            }
            try {
                model.generate(query, "video", 0, -1);
                System.out.println("no error");
            } catch (UdrlException e) {
                System.out.println("error\t" + e.code() + "\t" + e.getMessage());
            }
        }
        Udrl closed = Udrl.load(args[0], 1);
        closed.close();
        try {
            closed.generate(query, "image", 0, -1);
        } catch (UdrlException e) {
            System.out.println("closed\t" + e.code() + "\t" + e.getMessage());
        }
        try {
            Udrl.load(args[0] + ".missing");
        } catch (UdrlException e) {
            System.out.println("missing\t" + e.code() + "\t" + e.getMessage());
        }
    }
}
